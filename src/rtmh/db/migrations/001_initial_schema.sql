-- RTMH initial schema.
-- The five tables of the database README (raw_events, metrics_agg, incidents, alert_rules,
-- alert_notifications) plus what the pipeline needs: consumer offsets, dead letters, the incident
-- timeline, notification channels and silences. schema_migrations belongs to the migrators.
-- Plain SQL only, so psql (infra/migrate.sh) and `rtmh migrate` apply the same bytes.

-- updated_at maintenance shared by every table that has the column.
CREATE OR REPLACE FUNCTION rtmh_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

------------------------------------------------------------------------------------------------
-- raw_events: every message that decoded, exactly as received, partitioned by day of arrival.
-- No cross-table foreign keys and no global unique index, so the table stays Citus-distributable
-- by service. (generation, topic, kafka_partition, kafka_offset) identifies one Kafka message;
-- uniqueness is guaranteed by the worker committing offsets in the same transaction.
------------------------------------------------------------------------------------------------
CREATE TABLE raw_events (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    generation       integer     NOT NULL DEFAULT 0,
    message_key      text,
    data             jsonb       NOT NULL,
    event_time       timestamptz NOT NULL,
    service          text,
    host             text,
    level            text,
    -- e.g. {ts_out_of_range}: kept and queryable, but left out of the windows
    flags            text[]      NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);

-- Catches rows for a day whose partition was not created in time: nothing is ever refused.
CREATE TABLE raw_events_default PARTITION OF raw_events DEFAULT;

CREATE INDEX idx_raw_events_topic_created ON raw_events (topic, created_at);
CREATE INDEX idx_raw_events_level_gin ON raw_events USING gin ((data -> 'level'));
CREATE INDEX idx_raw_events_service_time ON raw_events (service, event_time);

-- Creates the daily partitions from today up to `days_ahead` days ahead and drops the ones that
-- ended more than `retention_days` ago. Idempotent; returns one line per action taken.
CREATE OR REPLACE FUNCTION rtmh_maintain_partitions(days_ahead integer DEFAULT 2,
                                                    retention_days integer DEFAULT 7)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    today date := (now() AT TIME ZONE 'UTC')::date;
    d date;
    part record;
    part_end timestamptz;
    part_name text;
BEGIN
    IF days_ahead < 0 OR retention_days < 1 THEN
        RAISE EXCEPTION 'rtmh_maintain_partitions: days_ahead must be >= 0 and retention_days >= 1';
    END IF;
    FOR i IN 0..days_ahead LOOP
        d := today + i;
        part_name := format('raw_events_%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF raw_events FOR VALUES FROM (%L) TO (%L)',
                part_name,
                (d::timestamp AT TIME ZONE 'UTC'),
                ((d + 1)::timestamp AT TIME ZONE 'UTC'));
            RETURN NEXT 'created ' || part_name;
        END IF;
    END LOOP;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'raw_events' AND c.relname ~ '^raw_events_[0-9]{8}$'
    LOOP
        part_end := ((to_date(substr(part.relname, 12), 'YYYYMMDD') + 1)::timestamp
                     AT TIME ZONE 'UTC');
        IF part_end < now() - make_interval(days => retention_days) THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT 'dropped ' || part.relname;
        END IF;
    END LOOP;
END;
$$;

SELECT rtmh_maintain_partitions(2, 7);

------------------------------------------------------------------------------------------------
-- metrics_agg: sliding-window aggregates. Partials from any number of workers merge additively
-- into one row per (window_key, metric_type, window_start).
------------------------------------------------------------------------------------------------
CREATE TABLE metrics_agg (
    window_key    text             NOT NULL,
    metric_type   text             NOT NULL,
    window_start  timestamptz      NOT NULL,
    window_end    timestamptz      NOT NULL,
    -- the metric's natural aggregate: rate for error_rate, mean for metrics, count for counts
    value         double precision,
    count         bigint           NOT NULL DEFAULT 0,
    sum           double precision NOT NULL DEFAULT 0,
    min           double precision,
    max           double precision,
    p50           double precision,
    p95           double precision,
    p99           double precision,
    -- mergeable quantile sketch (DDSketch bucket counts), null for plain counters
    sketch        jsonb,
    created_at    timestamptz      NOT NULL DEFAULT now(),
    updated_at    timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT metrics_agg_window_unique UNIQUE (window_key, metric_type, window_start),
    CONSTRAINT metrics_agg_window_order CHECK (window_end > window_start)
);

CREATE INDEX idx_metrics_agg_window_start ON metrics_agg (window_start);

CREATE TRIGGER trg_metrics_agg_updated_at
    BEFORE UPDATE ON metrics_agg
    FOR EACH ROW EXECUTE FUNCTION rtmh_touch_updated_at();

------------------------------------------------------------------------------------------------
-- Notification channels (named receivers) and alert rules.
------------------------------------------------------------------------------------------------
CREATE TABLE notification_channels (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    type        text    NOT NULL CHECK (type IN ('webhook', 'slack', 'email', 'pagerduty',
                                                 'alertmanager')),
    -- non-secret settings (url, timeout, recipients, ...)
    config      jsonb   NOT NULL DEFAULT '{}',
    -- secrets (HMAC key, routing key, SMTP password): never logged, never returned by the API
    secrets     jsonb   NOT NULL DEFAULT '{}',
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER trg_notification_channels_updated_at
    BEFORE UPDATE ON notification_channels
    FOR EACH ROW EXECUTE FUNCTION rtmh_touch_updated_at();

CREATE TABLE alert_rules (
    id                       serial PRIMARY KEY,
    name                     text    NOT NULL UNIQUE,
    description              text,
    -- detector name, copied to incidents.source (e.g. error_rate_monitor)
    source                   text    NOT NULL DEFAULT 'threshold_monitor',
    metric_type              text    NOT NULL,
    aggregation              text    NOT NULL DEFAULT 'value'
        CHECK (aggregation IN ('value', 'avg', 'min', 'max', 'sum', 'count', 'p50', 'p95', 'p99')),
    condition                text    NOT NULL
        CHECK (condition IN ('>', '>=', '<', '<=', '==', '!=')),
    threshold                double precision NOT NULL,
    -- hysteresis: once firing, the incident clears only when this is no longer crossed
    recovery_threshold       double precision,
    for_seconds              integer NOT NULL DEFAULT 0 CHECK (for_seconds >= 0),
    -- shell-style pattern on window_key; '*' = every service, '__all__' = the global key
    window_key_pattern       text    NOT NULL DEFAULT '*',
    -- ratio / quantile rules fire only on windows holding at least this many events
    min_count                integer NOT NULL DEFAULT 20 CHECK (min_count >= 0),
    -- absence rule: fire when a matching window_key sends nothing for no_data_seconds
    no_data_seconds          integer CHECK (no_data_seconds IS NULL OR no_data_seconds > 0),
    resolve_after_seconds    integer NOT NULL DEFAULT 30 CHECK (resolve_after_seconds >= 0),
    severity                 text    NOT NULL DEFAULT 'medium'
        CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    channels                 text[]  NOT NULL DEFAULT '{}',
    enabled                  boolean NOT NULL DEFAULT true,
    repeat_interval_seconds  integer NOT NULL DEFAULT 3600 CHECK (repeat_interval_seconds > 0),
    runbook_url              text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT alert_rules_name_not_blank CHECK (btrim(name) <> ''),
    CONSTRAINT alert_rules_threshold_finite CHECK (threshold <> 'NaN'::float8
        AND threshold NOT IN ('Infinity'::float8, '-Infinity'::float8))
);

CREATE TRIGGER trg_alert_rules_updated_at
    BEFORE UPDATE ON alert_rules
    FOR EACH ROW EXECUTE FUNCTION rtmh_touch_updated_at();

-- Workers LISTEN on this channel and reload rules without a restart.
CREATE OR REPLACE FUNCTION rtmh_notify_rules_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtmh_rules_changed', TG_OP);
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_alert_rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON alert_rules
    FOR EACH STATEMENT EXECUTE FUNCTION rtmh_notify_rules_changed();

------------------------------------------------------------------------------------------------
-- incidents and their timeline.
------------------------------------------------------------------------------------------------
CREATE TABLE incidents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    title          text NOT NULL,
    description    text,
    severity       text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status         text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'investigating', 'resolved', 'closed')),
    source         text NOT NULL,
    rule_id        integer REFERENCES alert_rules (id) ON DELETE SET NULL,
    window_key     text,
    fingerprint    text,
    last_value     double precision,
    peak_value     double precision,
    threshold      double precision,
    trigger_count  integer NOT NULL DEFAULT 1,
    first_seen     timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    closed_at      timestamptz,
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One live incident per (rule, window_key): repeats update it instead of opening another.
CREATE UNIQUE INDEX uq_incidents_live_fingerprint ON incidents (fingerprint)
    WHERE status IN ('open', 'investigating');
CREATE INDEX idx_incidents_source_created ON incidents (source, created_at DESC);
CREATE INDEX idx_incidents_status ON incidents (status);

CREATE TRIGGER trg_incidents_updated_at
    BEFORE UPDATE ON incidents
    FOR EACH ROW EXECUTE FUNCTION rtmh_touch_updated_at();

-- The status workflow, guarded in the database as well as in the state machine:
-- open -> investigating -> resolved -> closed; open -> resolved; resolved -> open (reopen);
-- open/investigating/resolved -> closed.
CREATE OR REPLACE FUNCTION rtmh_guard_incident_status() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'open'          AND NEW.status IN ('investigating', 'resolved', 'closed'))
        OR (OLD.status = 'investigating' AND NEW.status IN ('resolved', 'closed'))
        OR (OLD.status = 'resolved'      AND NEW.status IN ('open', 'closed'))
    ) THEN
        RAISE EXCEPTION 'incident %: status change % -> % is not allowed', OLD.id, OLD.status,
            NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER trg_incidents_status_guard
    BEFORE UPDATE OF status ON incidents
    FOR EACH ROW EXECUTE FUNCTION rtmh_guard_incident_status();

CREATE TABLE incident_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    event_type   text NOT NULL
        CHECK (event_type IN ('opened', 'updated', 'status_changed', 'resolved', 'reopened',
                              'closed', 'notified', 'comment')),
    from_status  text,
    to_status    text,
    value        double precision,
    -- the window values that caused the change ("why it fired")
    details      jsonb NOT NULL DEFAULT '{}',
    actor        text NOT NULL DEFAULT 'rtmh',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_incident_events_incident ON incident_events (incident_id, created_at);

------------------------------------------------------------------------------------------------
-- alert_notifications: the outbox and delivery record. One row per (incident, channel, event);
-- every attempt carries the same idempotency key so receivers can deduplicate.
------------------------------------------------------------------------------------------------
CREATE TABLE alert_notifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id      uuid REFERENCES incidents (id) ON DELETE CASCADE,
    channel          text NOT NULL,
    event            text NOT NULL CHECK (event IN ('open', 'update', 'repeat', 'resolve', 'test')),
    idempotency_key  text NOT NULL UNIQUE,
    status           text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'dead', 'suppressed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     integer NOT NULL DEFAULT 8 CHECK (max_attempts > 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    claimed_by       text,
    claimed_until    timestamptz,
    last_error       text,
    http_status      integer,
    response_body    text,
    payload          jsonb NOT NULL DEFAULT '{}',
    suppressed_by    bigint,
    sent_at          timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_alert_notifications_due ON alert_notifications (next_attempt_at)
    WHERE status IN ('pending', 'failed', 'sending');
CREATE INDEX idx_alert_notifications_incident ON alert_notifications (incident_id);

CREATE TRIGGER trg_alert_notifications_updated_at
    BEFORE UPDATE ON alert_notifications
    FOR EACH ROW EXECUTE FUNCTION rtmh_touch_updated_at();

-- Notifiers LISTEN on this channel, so a new notification is picked up without polling delay.
CREATE OR REPLACE FUNCTION rtmh_notify_notification_due() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('rtmh_notifications', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_alert_notifications_due
    AFTER INSERT ON alert_notifications
    FOR EACH STATEMENT EXECUTE FUNCTION rtmh_notify_notification_due();

CREATE TABLE silences (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- {"rule": "...", "service": "...", "severity": "..."}: every given key must match
    matchers    jsonb NOT NULL CHECK (jsonb_typeof(matchers) = 'object' AND matchers <> '{}'),
    starts_at   timestamptz NOT NULL DEFAULT now(),
    ends_at     timestamptz NOT NULL,
    comment     text NOT NULL DEFAULT '',
    created_by  text NOT NULL DEFAULT 'unknown',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT silences_period CHECK (ends_at > starts_at)
);

------------------------------------------------------------------------------------------------
-- Ingest bookkeeping: offsets committed in the same transaction as the rows they produced, and
-- the messages that could not be decoded, with their original bytes.
------------------------------------------------------------------------------------------------
CREATE TABLE consumer_offsets (
    group_id         text    NOT NULL,
    topic            text    NOT NULL,
    kafka_partition  integer NOT NULL,
    -- bumped when the broker's log is found reset, so (generation, offset) stays unique
    generation       integer NOT NULL DEFAULT 0,
    next_offset      bigint  NOT NULL CHECK (next_offset >= 0),
    -- digest of the message at next_offset - 1: read back on assignment to detect a reset log
    last_digest      bytea,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, kafka_partition)
);

CREATE TABLE dead_letters (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic            text    NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint  NOT NULL,
    generation       integer NOT NULL DEFAULT 0,
    message_key      bytea,
    payload          bytea,
    reason           text    NOT NULL,
    broker_time      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_dead_letters_created ON dead_letters (created_at);
CREATE INDEX idx_dead_letters_topic_offset ON dead_letters (topic, kafka_partition, kafka_offset);
