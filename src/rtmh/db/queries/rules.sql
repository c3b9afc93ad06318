-- Stage 3, the rules: reads rules and merged windows, writes incidents, their timeline and the
-- notification outbox (rtmh.rules.store, run by the rules engine after each batch commit and on
-- its one-second tick). Times cross the boundary as epoch seconds (float8).

-- name: listen_rules_changed
-- The trigger on alert_rules NOTIFYs this channel: the engine reloads its rules without a restart.
LISTEN rtmh_rules_changed

-- name: load_rules
-- SELECT *: validate_rule checks every column, and a column it does not know is an error there.
SELECT * FROM alert_rules ORDER BY id

-- name: load_windows_by_key
-- The merged windows a batch touched, by (window_key, metric_type, window_start epoch seconds):
-- three parallel arrays, so one statement serves any number of keys. Column order: store._window.
SELECT window_key, metric_type,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM window_end)::float8 AS window_end, value, count, sum, min, max,
       p50, p95, p99
FROM metrics_agg
WHERE (window_key, metric_type, window_start) IN (
    SELECT k, t, to_timestamp(s) FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(k, t, s))

-- name: load_current_windows
-- The windows of one key and type that cover now (start within the last window size): the tick
-- re-judges live incidents on them, so an incident resolves on time when its traffic stops.
-- Parameters: window_key, metric_type, now, window size in seconds, now.
SELECT window_key, metric_type,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM window_end)::float8 AS window_end, value, count, sum, min, max,
       p50, p95, p99
FROM metrics_agg
WHERE window_key = %s AND metric_type = %s
  AND window_start > to_timestamp(%s) - make_interval(secs => %s)
  AND window_start <= to_timestamp(%s)

-- name: last_data_by_key
-- Absence rules: when each key last had data of a type. max(window_start) + slide is within one
-- slide of the newest event; six hours back is far more than any no_data_seconds worth paging on
-- and keeps the scan to recent partitions. Parameters: slide seconds, metric_type.
SELECT window_key, extract(epoch FROM max(window_start))::float8 + %s
FROM metrics_agg
WHERE metric_type = %s AND window_start > now() - interval '6 hours' AND count > 0
GROUP BY window_key

-- name: latest_incident_for_update
-- The newest incident of a fingerprint, locked for the transaction that steps it: two workers
-- judging the same (rule, key) serialise here. Column order: store.state_from_row's names.
SELECT id::text AS id, title, severity, status, source, rule_id, window_key,
       fingerprint, last_value, peak_value, threshold, trigger_count, first_seen, last_seen,
       resolved_at, closed_at, metadata, description
FROM incidents
WHERE fingerprint = %s ORDER BY created_at DESC LIMIT 1 FOR UPDATE

-- name: active_fingerprints
-- Fingerprints worth a query when a verdict is clear: live incidents (the statuses of the
-- partial unique index uq_incidents_live_fingerprint) and those resolved within the reopen
-- period (seconds, the parameter).
SELECT DISTINCT fingerprint FROM incidents
WHERE fingerprint IS NOT NULL
  AND (status IN ('open', 'investigating') OR resolved_at > now() - make_interval(secs => %s))

-- name: live_incidents
-- (rule_id, window_key) of every live incident: the tick re-judges each on the current windows.
SELECT rule_id, window_key FROM incidents
WHERE status IN ('open', 'investigating') AND rule_id IS NOT NULL

-- name: insert_incident
INSERT INTO incidents (title, description, severity, status, source, rule_id, window_key,
                       fingerprint, last_value, peak_value, threshold, trigger_count, first_seen,
                       last_seen, metadata)
VALUES (%(title)s, %(description)s, %(severity)s, %(status)s, %(source)s, %(rule_id)s,
        %(window_key)s, %(fingerprint)s, %(last_value)s, %(peak_value)s, %(threshold)s,
        %(trigger_count)s, %(first_seen)s, %(last_seen)s, %(metadata)s)
RETURNING id::text

-- name: update_incident
-- metadata || : the evaluation bookkeeping (metadata.eval) is replaced, the rest (trigger
-- window, recent errors and changes written at open) is kept. severity follows the one last
-- notified (NULL: unknown, keep the column).
UPDATE incidents
SET status = %(status)s, last_value = %(last_value)s, peak_value = %(peak_value)s,
    trigger_count = %(trigger_count)s, last_seen = %(last_seen)s, resolved_at = %(resolved_at)s,
    closed_at = %(closed_at)s, severity = coalesce(%(severity)s, severity),
    metadata = metadata || %(metadata)s
WHERE id = %(id)s

-- name: insert_timeline
INSERT INTO incident_events (incident_id, event_type, from_status, to_status, value, details,
                             actor)
VALUES (%s, %s, %s, %s, %s, %s, %s)

-- name: insert_notification
-- The outbox row, written in the incident's own transaction. ON CONFLICT: the idempotency key
-- (incident, channel, event, seq) is unique, so a step retried after a lost race writes nothing
-- twice.
INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, status, payload,
                                 suppressed_by)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING

-- name: active_silences
-- The one silences query, for the rules stage (when it queues a notification) and the notifier
-- (when it sends one); read as dict rows by rtmh.rules.silences.Silence.from_row.
SELECT id, starts_at, ends_at, matchers FROM silences WHERE starts_at <= now() AND ends_at > now()

-- name: recent_errors
-- Written into a new incident's metadata: what an on-call engineer asks first.
SELECT event_time, data->>'msg' AS msg, data->>'message' AS message, host
FROM raw_events
WHERE service = %s AND level IN ('error', 'fatal') AND event_time > now() - interval '15 minutes'
ORDER BY event_time DESC LIMIT 5

-- name: recent_changes
-- ... and what changed just before: RTMH's change events, and Kubernetes Events that warn or
-- restart something (BackOff, OOMKilling, Unhealthy, Killing) or scale a Deployment (a rollout).
-- A Kubernetes Event reads as type 'kubernetes:<reason>' with its message and object.
-- Parameters: service, the event topics (text[]). Uses idx_raw_events_service_time.
SELECT event_time,
       CASE WHEN data->>'kind' = 'Event' THEN 'kubernetes:' || coalesce(data->>'reason', 'unknown')
            ELSE data->>'type' END AS type,
       CASE WHEN data->>'kind' = 'Event' THEN jsonb_strip_nulls(jsonb_build_object(
                'message', coalesce(data->>'message', data->>'note'),
                'severity', data->>'type',
                'object', coalesce(data->'involvedObject', data->'regarding'),
                'count', data->'count'))
            ELSE data->'payload' END AS payload
FROM raw_events
WHERE service = %s AND topic = ANY(%s) AND event_time > now() - interval '15 minutes'
  AND (data->>'type' IN ('deploy', 'config_change', 'restart', 'rollback', 'scale')
       OR (data->>'kind' = 'Event'
           AND (data->>'type' = 'Warning'
                OR data->>'reason' IN ('Killing', 'ScalingReplicaSet', 'SuccessfulRescale'))))
ORDER BY event_time DESC LIMIT 5

-- name: relax_commit
-- This transaction only refreshes a live incident's running values (rules.lifecycle.refresh_only):
-- its COMMIT need not wait for the WAL flush. A crash may lose the last ~0.6 s of such refreshes
-- (wal_writer_delay x 3); the next evaluation writes them again. Every evaluation of a live
-- incident writes one, so with group commit they came many times a second, each waiting on an
-- fsync on the rules engine's thread ahead of the evaluation that opens the next incident.
SET LOCAL synchronous_commit = off
