-- Queries of the benchmarks (rtmh/bench/): how they set up a run and read back what the hub
-- committed. The hub's own statements live in its stages' files; nothing here runs in the hub.

-- name: server_version
SHOW server_version

-- name: server_settings
-- The settings that decide what a commit costs (bench.common.PG_SETTINGS), recorded beside
-- every result.
SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)

-- name: committed_offsets
-- Messages the worker's group has committed: the sum of its next offsets over every partition.
SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE group_id = %s

-- name: enable_only_rule
-- `bench detect`: only the rule the bursts must trip is evaluated.
UPDATE alert_rules SET enabled = (name = %(rule)s)

-- name: configure_rule
-- `bench detect`: the rule as shipped, but with a short resolve period so a service can burst
-- again (a reopen) within a long run; returns what the traffic must model.
UPDATE alert_rules SET resolve_after_seconds = %(resolve)s, channels = '{demo-webhook}'
WHERE name = %(rule)s
RETURNING id, metric_type, aggregation, condition, threshold, recovery_threshold, min_count,
          for_seconds, resolve_after_seconds, window_key_pattern, channels

-- name: listen_outbox
-- `bench detect`'s watcher: the outbox's INSERT trigger NOTIFYs this channel, delivered at the
-- incident transaction's commit: the moment the benchmark calls "committed".
LISTEN rtmh_notifications

-- name: new_incident_events
-- `bench detect`'s watcher: the rule's timeline rows after the last one seen.
SELECT e.id, i.window_key, e.event_type, extract(epoch FROM e.created_at)::float8,
       e.details, i.id::text
FROM incident_events AS e JOIN incidents AS i ON i.id = e.incident_id
WHERE e.id > %s AND e.event_type IN ('opened', 'reopened', 'resolved') AND i.rule_id = %s
ORDER BY e.id

-- name: ingested_at
-- When one produced log line was stored: raw_events.created_at is the start of the ingest
-- transaction that wrote it (found by service, a 20 ms span of event time and request id).
SELECT extract(epoch FROM created_at)::float8 FROM raw_events
WHERE service = %s AND event_time BETWEEN to_timestamp(%s) AND to_timestamp(%s)
  AND data->>'request_id' = %s
LIMIT 1

-- name: ingest_transactions
-- One row per ingest transaction (raw_events.created_at is its start): size and message ages.
SELECT extract(epoch FROM created_at)::float8, count(*)::bigint,
       extract(epoch FROM min(event_time))::float8, extract(epoch FROM max(event_time))::float8
FROM raw_events
WHERE created_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)
GROUP BY created_at ORDER BY created_at

-- name: table_stats
-- Writes and autovacuum activity of the tables the hot path writes (run without parameters:
-- '%%' reaches the server as is and matches like '%').
SELECT relname, n_tup_ins, n_tup_upd, n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,
       extract(epoch FROM last_autovacuum)::float8, extract(epoch FROM last_autoanalyze)::float8
FROM pg_stat_user_tables
WHERE relname LIKE 'raw_events%%' OR relname IN ('metrics_agg', 'incidents', 'incident_events')
ORDER BY relname

-- name: insert_webhook_channel
-- `bench notify`: the HMAC-signed webhook channel pointing at the loopback receiver.
INSERT INTO notification_channels (name, type, config, secrets) VALUES (%s, 'webhook', %s, %s)

-- name: insert_incident
-- `bench notify`: an open incident, as the rules engine would commit it.
INSERT INTO incidents (id, title, severity, status, source, window_key, last_value, peak_value,
                       threshold, first_seen, last_seen, fingerprint)
VALUES (%s, %s, 'high', 'open', 'bench', %s, 0.12, 0.12, 0.05, %s, %s, %s)

-- name: insert_notification
-- `bench notify`: the incident's outbox row, in the same transaction (its commit is the clock).
INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, payload)
VALUES (%s, %s, 'open', %s, %s)

-- name: notification_status_counts
-- `bench notify`: the outbox rows of one run by status (keys share the run's prefix).
SELECT status, count(*) FROM alert_notifications WHERE idempotency_key LIKE %s GROUP BY status

-- name: ingest_ceiling_rows
-- `rtmh bench ingest`: what the COPY ceiling stored (checked against what it sent).
SELECT count(*) FROM raw_events

-- name: ingest_committed
-- How many messages a benchmarked worker's group has committed (its progress bar).
SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE group_id = %s

-- name: ingest_stored
-- A benchmarked worker's result, checked against what was produced.
SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM dead_letters),
       (SELECT count(*) FROM metrics_agg)

-- name: naive_insert
-- The naive consumer: one INSERT and one COMMIT a message (columns as copy_text.RAW_COLUMNS).
INSERT INTO raw_events (topic, kafka_partition, kafka_offset, record_index, generation,
                        message_key, message_key_bytes, data, event_time, service, host, level,
                        flags)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)

-- name: add_poison_check
-- The safety-net phase: a CHECK that refuses one chosen message, so PostgreSQL (not the
-- decoder) refuses it inside the checkpoint. The message text is the bench's own constant.
ALTER TABLE raw_events ADD CONSTRAINT rtmh_bench_poison
    CHECK (data->>'msg' IS DISTINCT FROM 'rtmh-bench-poison')

-- name: soak_lag
-- `bench up-soak`: rows committed since the last sample, and the delay from a message's making to
-- its row's commit (created_at is the commit's transaction time; index raw_events(topic,
-- created_at)). The newest created_at is where the next sample starts.
SELECT count(*),
       extract(epoch FROM percentile_disc(0.99) WITHIN GROUP (ORDER BY created_at - event_time))
           ::float8,
       extract(epoch FROM max(created_at - event_time))::float8,
       max(created_at)
FROM raw_events
WHERE topic = ANY(%s) AND created_at > %s

-- name: cardinality_keys
-- `rtmh bench cardinality`: the window keys a run left in metrics_agg, the rows of the fold key
-- (parameter: __other__), and the distinct services raw_events holds (every one, folded or not).
SELECT (SELECT count(DISTINCT window_key) FROM metrics_agg),
       (SELECT count(*) FROM metrics_agg WHERE window_key = %s),
       (SELECT count(DISTINCT service) FROM raw_events)

-- name: oracle_raw_events
-- The window oracle (bench.windows_oracle): every stored row with what windowing reads of it;
-- the JSON only for metrics, the one kind whose windows read values from it.
SELECT topic, event_time, service, level, flags,
       CASE WHEN topic LIKE '%%metrics' THEN data::text END
FROM raw_events

-- name: oracle_metrics_agg
-- The window oracle: every window row, to compare with the recomputation.
SELECT window_key, metric_type, window_start, window_end, value, count, sum, min, max,
       p50, p95, p99, sketch
FROM metrics_agg

-- name: soak_good_sequences
-- `bench soak`: the sequence number of every stored good message (duplicates included).
SELECT (data ->> 'soak_seq')::bigint FROM raw_events WHERE data ? 'soak_seq'

-- name: soak_bad_markers
-- `bench soak`: the marker of every malformed message found in dead_letters, with its reason.
SELECT substring(convert_from(payload, 'UTF8') FROM 'soak-bad-([0-9]+)')::bigint, reason
FROM dead_letters
WHERE payload IS NOT NULL AND position('soak-bad-'::bytea IN payload) > 0

-- name: soak_stored_counts
-- `bench soak`: rows and dead letters so far (what the end waits on).
SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM dead_letters)

-- name: soak_notification_rows
-- `bench soak`: every notification of the run with its idempotency key, status and attempts.
SELECT idempotency_key, status, attempts, event FROM alert_notifications
WHERE event <> 'test' ORDER BY id

-- name: soak_unsettled
-- `bench soak`'s end: incidents still live and notifications not yet in a final state.
SELECT (SELECT count(*) FROM incidents WHERE status IN ('open', 'investigating')),
       (SELECT count(*) FROM alert_notifications
        WHERE status IN ('pending', 'sending', 'failed'))

-- name: soak_incidents
-- `bench soak`: incidents the bursts opened.
SELECT count(*) FROM incidents

-- name: soak_openings
-- `bench soak`: every incident opening (new or reopened) with its service and time (epoch s).
SELECT i.window_key, extract(epoch FROM e.created_at)
FROM incident_events e JOIN incidents i ON i.id = e.incident_id
WHERE e.event_type IN ('opened', 'reopened')
ORDER BY e.created_at
