-- `rtmh bench api` (rtmh.bench.api_data): the data set the API is measured on, generated inside
-- PostgreSQL (INSERT ... SELECT over generate_series), in chunks so that a progress bar moves.
-- Always in a fresh database of the bench's own, never a user's.
--
-- Every "random" choice is a hash of the row's number (hashint8extended with one seed per
-- dimension, masked to non-negative): the same arguments give the same rows on every run, and
-- the draws are independent of each other without a random() call per column. mod() instead of
-- the percent operator keeps the statements free of psycopg's placeholder character.

-- name: insert_raw_events
-- Rows %(lo)s .. %(hi)s - 1 of the data set: event times evenly spread from %(start)s, one every
-- %(step_s)s seconds; created_at 0-2 s after the event time (a worker keeping up). Service i
-- of %(services)s takes a share that falls with i (u^1.5 of a uniform u: the first service
-- about 7 times the last), as real fleets have a few noisy services. Levels: 1 in 100 error,
-- 4 warn, 10 debug, the rest info; 3 in 100 rows on the events topic. kafka_partition and
-- kafka_offset come from the row's number (12 partitions), so no two rows share them.
INSERT INTO raw_events (topic, kafka_partition, kafka_offset, data, event_time, service, host,
                        level, created_at)
SELECT g.topic, mod(g.i, 12)::integer, g.i / 12,
       jsonb_build_object(
           'ts', round(extract(epoch FROM g.event_time), 3)::float8,
           'service', g.service,
           'host', g.host,
           'level', g.level,
           'msg', CASE g.level
                      WHEN 'error' THEN 'upstream timeout after ' || mod(g.h3, 5000) || ' ms'
                      WHEN 'warn' THEN 'slow query took ' || mod(g.h3, 2000) || ' ms'
                      WHEN 'debug' THEN 'cache lookup key=item:' || mod(g.h3, 100000)
                      ELSE 'GET /api/items/' || mod(g.h3, 100000) || ' 200'
                  END),
       g.event_time, g.service, g.host, g.level,
       g.event_time + make_interval(secs => mod(g.h3, 2000) / 1e3::float8)
FROM (
    SELECT h.i, h.event_time, h.h3,
           'svc-' || lpad(h.svc::text, 2, '0') AS service,
           'svc-' || lpad(h.svc::text, 2, '0') || '-pod-' || mod(h.h3, 4) AS host,
           CASE WHEN h.h1 < 100 THEN 'error'
                WHEN h.h1 < 500 THEN 'warn'
                WHEN h.h1 < 1500 THEN 'debug'
                ELSE 'info' END AS level,
           CASE WHEN mod(h.h3 / 7, 100) < 3 THEN 'rtmh.events' ELSE 'rtmh.logs' END AS topic
    FROM (
        SELECT s.i,
               %(start)s::timestamptz + make_interval(secs => s.i * %(step_s)s::float8)
                   AS event_time,
               mod(hashint8extended(s.i, 1) & 9223372036854775807, 10000) AS h1,
               floor(%(services)s::integer
                     * power(mod(hashint8extended(s.i, 2) & 9223372036854775807, 1000000)
                             / 1e6::float8, 1.5::float8))::integer AS svc,
               hashint8extended(s.i, 3) & 9223372036854775807 AS h3
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS s(i)
    ) h
) g

-- name: insert_metrics_agg
-- Window starts %(lo)s .. %(hi)s - 1 (one every %(step_s)s seconds from %(start)s), each for
-- every key in %(keys)s and type in %(types)s: the worker writes all keys of a window together,
-- so one series' rows lie on different pages, as in a real table. Counts are counts, error_rate
-- a ratio, the rest means with quantiles. No sketch: the series query does not read it.
INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value, count, sum,
                         min, max, p50, p95, p99)
SELECT w.window_key, w.metric_type, w.window_start,
       w.window_start + make_interval(secs => %(window_s)s::integer),
       CASE WHEN w.metric_type = 'error_rate' THEN w.h / 1e6 / 50
            WHEN w.metric_type LIKE '%%count' THEN w.n::float8
            ELSE 10 + mod(w.h, 500) END,
       w.n,
       w.n * (10 + mod(w.h, 500)),
       CASE WHEN w.metric_type LIKE '%%count' THEN NULL ELSE 1 + mod(w.h, 10) END,
       CASE WHEN w.metric_type LIKE '%%count' THEN NULL ELSE 600 + mod(w.h, 900) END,
       CASE WHEN w.metric_type LIKE '%%count' THEN NULL ELSE 10 + mod(w.h, 500) END,
       CASE WHEN w.metric_type LIKE '%%count' THEN NULL ELSE 400 + mod(w.h, 400) END,
       CASE WHEN w.metric_type LIKE '%%count' THEN NULL ELSE 550 + mod(w.h, 600) END
FROM (
    SELECT k.window_key, t.metric_type,
           %(start)s::timestamptz + make_interval(secs => s.n * %(step_s)s::float8)
               AS window_start,
           mod(hashint8extended(s.n * 1000 + k.ord * 31 + t.ord, 4) & 9223372036854775807,
               1000000) AS h,
           100 + mod(hashint8extended(s.n * 1000 + k.ord * 31 + t.ord, 5)
                     & 9223372036854775807, 900) AS n
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS s(n)
    CROSS JOIN unnest(%(keys)s::text[]) WITH ORDINALITY AS k(window_key, ord)
    CROSS JOIN unnest(%(types)s::text[]) WITH ORDINALITY AS t(metric_type, ord)
) w

-- name: insert_rules
-- The rules the incidents name (the list joins alert_rules for rule_name).
INSERT INTO alert_rules (name, source, metric_type, condition, threshold, severity, channels)
SELECT 'bench-rule-' || n,
       CASE WHEN mod(n, 2) = 0 THEN 'error_rate_monitor' ELSE 'threshold_monitor' END,
       CASE WHEN mod(n, 2) = 0 THEN 'error_rate' ELSE 'http_latency_ms' END,
       '>', CASE WHEN mod(n, 2) = 0 THEN 0.05 ELSE 800 END,
       (ARRAY['low', 'medium', 'high', 'critical'])[1 + mod(n, 4)],
       ARRAY['bench-webhook']
FROM generate_series(1, %(rules)s::integer) AS s(n)

-- name: insert_incidents
-- %(incidents)s incidents over the last %(days)s days, newest last; 3 in 100 still open, 2
-- investigating, the rest resolved or closed. Each fingerprint is its own, so the partial
-- unique index on live fingerprints never refuses one. metadata holds what the rules engine
-- stores ("why it fired", recent errors).
INSERT INTO incidents (title, severity, status, source, rule_id, window_key, fingerprint,
                       last_value, peak_value, threshold, trigger_count, first_seen, last_seen,
                       resolved_at, closed_at, metadata, created_at, updated_at)
SELECT r.name || ' on ' || x.service, r.severity, x.status, r.source, r.id, x.service,
       'bench:' || x.i, r.threshold * 1.4, r.threshold * 1.9, r.threshold, 1 + mod(x.h, 20),
       x.created, x.created + interval '3 minutes',
       CASE WHEN x.status IN ('resolved', 'closed') THEN x.created + interval '20 minutes' END,
       CASE WHEN x.status = 'closed' THEN x.created + interval '2 hours' END,
       jsonb_build_object(
           'rule_name', r.name,
           'trigger', jsonb_build_object('value', r.threshold * 1.4, 'threshold', r.threshold,
                                         'window_start', x.created - interval '60 seconds',
                                         'window_end', x.created, 'count', 200 + mod(x.h, 800)),
           'recent_errors', jsonb_build_array(
               jsonb_build_object('ts', x.created, 'msg', 'upstream timeout after 3000 ms'),
               jsonb_build_object('ts', x.created, 'msg', 'connection reset by peer'))),
       x.created, x.created + interval '20 minutes'
FROM (
    SELECT s.i,
           now() - make_interval(days => %(days)s::integer)
               + make_interval(secs => s.i * (%(days)s::integer * 86400.0 / %(incidents)s::integer))
               AS created,
           'svc-' || lpad(mod(hashint8extended(s.i, 6) & 9223372036854775807,
                              %(services)s::integer)::text, 2, '0') AS service,
           CASE WHEN mod(hashint8extended(s.i, 7) & 9223372036854775807, 100) < 3 THEN 'open'
                WHEN mod(hashint8extended(s.i, 7) & 9223372036854775807, 100) < 5
                    THEN 'investigating'
                WHEN mod(hashint8extended(s.i, 7) & 9223372036854775807, 100) < 60
                    THEN 'closed'
                ELSE 'resolved' END AS status,
           hashint8extended(s.i, 8) & 9223372036854775807 AS h,
           1 + mod(hashint8extended(s.i, 9) & 9223372036854775807, %(rules)s::integer) AS rule_no
    FROM generate_series(0, %(incidents)s::integer - 1) AS s(i)
) x
JOIN alert_rules r ON r.name = 'bench-rule-' || x.rule_no

-- name: insert_timeline
-- Each incident's story: opened, one to four updates a minute apart, then status_changed to
-- investigating, resolved and closed as its status says. (The stream trigger appends each row
-- to stream_events, as it does for the rules engine's rows.)
INSERT INTO incident_events (incident_id, event_type, from_status, to_status, value, details,
                             actor, created_at)
SELECT e.incident_id, e.event_type, e.from_status, e.to_status, e.value, e.details, e.actor,
       e.created_at
FROM (
    SELECT i.id AS incident_id, 'opened' AS event_type, NULL AS from_status,
           'open' AS to_status, i.last_value AS value, i.metadata->'trigger' AS details,
           'rtmh' AS actor, i.created_at
    FROM incidents i
    UNION ALL
    SELECT i.id, 'updated', NULL, NULL, i.last_value * (1 + u.n / 10.0),
           jsonb_build_object('window_end', i.created_at + make_interval(mins => u.n)),
           'rtmh', i.created_at + make_interval(mins => u.n)
    FROM incidents i
    CROSS JOIN LATERAL generate_series(1, 1 + mod(i.trigger_count, 4)) AS u(n)
    UNION ALL
    SELECT i.id, 'status_changed', 'open', 'investigating', NULL, '{}'::jsonb, 'bench-oncall',
           i.created_at + interval '5 minutes'
    FROM incidents i
    WHERE i.status <> 'open'
    UNION ALL
    SELECT i.id, 'resolved', 'investigating', 'resolved', i.threshold * 0.5, '{}'::jsonb,
           'rtmh', i.resolved_at
    FROM incidents i
    WHERE i.status IN ('resolved', 'closed')
    UNION ALL
    SELECT i.id, 'closed', 'resolved', 'closed', NULL, '{}'::jsonb, 'bench-oncall', i.closed_at
    FROM incidents i
    WHERE i.status = 'closed'
) e
ORDER BY e.created_at

-- name: insert_notifications
-- An 'open' notification for every incident and a 'resolve' one for the resolved and closed,
-- each delivered on its first attempt.
INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, status, attempts,
                                 next_attempt_at, http_status, payload, sent_at, created_at,
                                 updated_at)
SELECT n.incident_id, 'bench-webhook', n.event, n.incident_id::text || ':' || n.event, 'sent',
       1, n.at, 200, jsonb_build_object('event', n.event), n.at + interval '150 milliseconds',
       n.at, n.at + interval '150 milliseconds'
FROM (
    SELECT i.id AS incident_id, 'open' AS event, i.created_at AS at FROM incidents i
    UNION ALL
    SELECT i.id, 'resolve', i.resolved_at FROM incidents i
    WHERE i.status IN ('resolved', 'closed')
) n
ORDER BY n.at

-- name: insert_attempts
-- The one attempt of each notification, as the attempt trigger records it.
INSERT INTO notification_attempts (notification_id, attempt, outcome, http_status, at)
SELECT id, 1, 'sent', 200, sent_at
FROM alert_notifications

-- name: incident_ids
SELECT id::text FROM incidents ORDER BY created_at

-- name: table_sizes
-- Rows (exact) and total size (heap, indexes, TOAST; for raw_events every partition).
SELECT t.name,
       (SELECT sum(pg_total_relation_size(c.oid))::bigint
        FROM pg_class c
        WHERE c.oid = t.name::regclass
           OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = t.name::regclass))
           AS bytes
FROM unnest(ARRAY['raw_events', 'metrics_agg', 'incidents', 'incident_events',
                  'alert_notifications', 'notification_attempts']) AS t(name)

-- name: relation_exists
SELECT to_regclass(%s) IS NOT NULL
