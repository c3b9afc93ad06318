-- RTMH 007: what the REST API needs (issue 12).
--
-- api_tokens: bearer tokens made by `rtmh token create`. A token reads rtmh_<lookup>_<secret>;
-- the lookup part finds the row, and only a salted SHA-256 of the secret is stored (the secret
-- is 256 random bits, so a slow password hash would buy nothing). Revoking keeps the row, so the
-- timeline's actor names stay explainable.
--
-- idx_raw_events_service_errors: one service's errors, for the events search and recent_errors.
--
-- incidents.assignee and the 'assigned' timeline event: people take an incident.
--
-- notification_attempts: one row per delivery attempt's result, written by a trigger when a
-- claimed notification ('sending') gets its outcome; alert_notifications keeps only the last.
--
-- stream_events: what the API's live stream (server-sent events) replays. Triggers append a row
-- for each timeline entry and each notification result, in the transaction that made the change,
-- and NOTIFY rtmh_stream with its id: listeners wake on the NOTIFY and read the new rows by id,
-- so a client that reconnects with Last-Event-ID gets exactly what it missed. The API deletes
-- rows older than a day.

CREATE TABLE api_tokens (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$'),
    scope         text NOT NULL CHECK (scope IN ('read', 'write', 'admin')),
    lookup        text NOT NULL UNIQUE,
    salt          bytea NOT NULL,
    secret_hash   bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- A name identifies one live token (the timeline's actor); a revoked name may be reused.
CREATE UNIQUE INDEX uq_api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- The events search people run most (one service's errors, newest first) and the rules stage's
-- recent_errors: without it, a service's error lines are found by reading all its lines of the
-- period (10,400 heap pages for 100 errors in an hour of 416,000 rows: 60-120 ms uncached);
-- with it, 0.5 ms. Partial, so it holds ~1 % of the rows and costs ingest nothing measurable.
CREATE INDEX idx_raw_events_service_errors ON raw_events (service, event_time)
    WHERE level IN ('error', 'fatal');

ALTER TABLE incidents ADD COLUMN assignee text;

-- The API's incident list: newest first with keyset pagination on (created_at, id), optionally
-- by service (window_key) or rule; status and source filters use 001's indexes.
CREATE INDEX idx_incidents_created ON incidents (created_at DESC, id DESC);
CREATE INDEX idx_incidents_window_key_created ON incidents (window_key, created_at DESC);
CREATE INDEX idx_incidents_rule_created ON incidents (rule_id, created_at DESC);

ALTER TABLE incident_events DROP CONSTRAINT incident_events_event_type_check;
ALTER TABLE incident_events ADD CONSTRAINT incident_events_event_type_check
    CHECK (event_type IN ('opened', 'updated', 'status_changed', 'resolved', 'reopened',
                          'closed', 'notified', 'comment', 'assigned'));

CREATE TABLE stream_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('incident', 'notification')),
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_stream_events_created ON stream_events (created_at);

CREATE OR REPLACE FUNCTION rtmh_stream_append(p_kind text, p_data jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO stream_events (kind, data) VALUES (p_kind, p_data) RETURNING id INTO new_id;
    -- the id only: NOTIFY payloads are limited to 8000 bytes and listeners read the row anyway
    PERFORM pg_notify('rtmh_stream', new_id::text);
END;
$$;

CREATE OR REPLACE FUNCTION rtmh_stream_incident_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rtmh_stream_append('incident', jsonb_build_object(
        'incident_id', NEW.incident_id,
        'event_type', NEW.event_type,
        'from_status', NEW.from_status,
        'to_status', NEW.to_status,
        'value', NEW.value,
        'actor', NEW.actor,
        'at', NEW.created_at,
        'incident', (SELECT jsonb_build_object(
                         'title', i.title, 'severity', i.severity, 'status', i.status,
                         'window_key', i.window_key, 'assignee', i.assignee,
                         'last_value', i.last_value, 'threshold', i.threshold)
                     FROM incidents i WHERE i.id = NEW.incident_id)));
    RETURN NULL;
END;
$$;

CREATE TRIGGER trg_incident_events_stream
    AFTER INSERT ON incident_events
    FOR EACH ROW EXECUTE FUNCTION rtmh_stream_incident_event();

CREATE OR REPLACE FUNCTION rtmh_stream_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM rtmh_stream_append('notification', jsonb_build_object(
        'notification_id', NEW.id,
        'incident_id', NEW.incident_id,
        'channel', NEW.channel,
        'event', NEW.event,
        'status', NEW.status,
        'attempts', NEW.attempts,
        'http_status', NEW.http_status,
        'last_error', NEW.last_error,
        'at', NEW.updated_at));
    RETURN NULL;
END;
$$;

-- A result is a change to sent, failed, dead or suppressed; 'sending' is a claim, not news.
CREATE TRIGGER trg_alert_notifications_stream_result
    AFTER UPDATE OF status ON alert_notifications
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('sent', 'failed', 'dead', 'suppressed'))
    EXECUTE FUNCTION rtmh_stream_notification();

CREATE TRIGGER trg_alert_notifications_stream_suppressed
    AFTER INSERT ON alert_notifications
    FOR EACH ROW
    WHEN (NEW.status = 'suppressed')
    EXECUTE FUNCTION rtmh_stream_notification();

CREATE TABLE notification_attempts (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id  bigint NOT NULL REFERENCES alert_notifications (id) ON DELETE CASCADE,
    attempt          integer NOT NULL,
    -- sent, failed (retried), dead (given up), interrupted (the notifier stopped meanwhile)
    outcome          text NOT NULL CHECK (outcome IN ('sent', 'failed', 'dead', 'interrupted')),
    http_status      integer,
    error            text,
    at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX idx_notification_attempts_notification
    ON notification_attempts (notification_id, attempt);

CREATE OR REPLACE FUNCTION rtmh_record_notification_attempt() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notification_attempts (notification_id, attempt, outcome, http_status, error)
    VALUES (NEW.id, NEW.attempts,
            CASE WHEN NEW.status = 'pending' THEN 'interrupted' ELSE NEW.status END,
            NEW.http_status, NEW.last_error);
    RETURN NULL;
END;
$$;

-- 'sending' -> 'suppressed' gives the attempt back (nothing was sent): not an attempt.
CREATE TRIGGER trg_alert_notifications_attempt
    AFTER UPDATE OF status ON alert_notifications
    FOR EACH ROW
    WHEN (OLD.status = 'sending' AND NEW.status IN ('sent', 'failed', 'dead', 'pending'))
    EXECUTE FUNCTION rtmh_record_notification_attempt();
