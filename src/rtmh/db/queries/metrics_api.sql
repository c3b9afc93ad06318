-- Windows for people (rtmh.service.metrics): one key's series for a chart, and the newest value
-- of every key for an overview. Read-only; the window stage writes metrics_agg (windows.sql).

-- name: series
-- One (window_key, metric_type) over [since, until), oldest first: a single range scan of
-- metrics_agg_window_unique (window_key, metric_type, window_start), already in order, so no
-- sort. The sketch stays in the table: charts want the numbers. %(limit)s is one more than the
-- caller returns, to tell a truncated series. The points come back as one JSON array built
-- here: a 6-hour series is ~2,200 windows, and turning them into Python objects, validating
-- and encoding them again cost ~19 ms of the API's CPU a request (`rtmh bench api`), the query
-- 4 ms.
WITH points AS (
    SELECT window_start, window_end, value, count, sum, min, max, p50, p95, p99,
           row_number() OVER (ORDER BY window_start) AS n
    FROM metrics_agg
    WHERE window_key = %(window_key)s
      AND metric_type = %(metric_type)s
      AND window_start >= %(since)s
      AND window_start < %(until)s
    ORDER BY window_start
    LIMIT %(limit)s
)
SELECT coalesce(
           json_agg(json_build_object(
               'window_start', window_start, 'window_end', window_end, 'value', value,
               'count', count, 'sum', sum, 'min', min, 'max', max, 'p50', p50, 'p95', p95,
               'p99', p99) ORDER BY window_start)
               FILTER (WHERE n < %(limit)s),
           '[]')::text AS points,
       count(*) >= %(limit)s AS truncated
FROM points

-- name: latest
-- The newest window of each (window_key, metric_type) that has one in the last
-- %(since_minutes)s minutes, all from metrics_agg_window_unique (window_key, metric_type,
-- window_start): a loose index scan (the recursive part) walks the distinct pairs, one index
-- descent each, and for each pair a backward descent finds its newest window inside the span,
-- or nothing. The cost grows with the pairs the table holds (keys x types, bounded by the
-- window-key budget), not with the windows in the span. Measured (PostgreSQL 18, 200 keys x 4
-- types, 10-s slides, 1.7 million rows): 16 ms, where DISTINCT ON over the span's rows from
-- idx_metrics_agg_window_start sorted 128,000 rows in 308 ms (to disk). The bound is computed
-- from the database's clock, like the windows it is compared to.
WITH RECURSIVE pairs AS (
    (SELECT window_key, metric_type
     FROM metrics_agg
     ORDER BY window_key, metric_type
     LIMIT 1)
    UNION ALL
    SELECT next.window_key, next.metric_type
    FROM pairs p
    CROSS JOIN LATERAL (
        SELECT m.window_key, m.metric_type
        FROM metrics_agg m
        WHERE (m.window_key, m.metric_type) > (p.window_key, p.metric_type)
        ORDER BY m.window_key, m.metric_type
        LIMIT 1) next
)
SELECT newest.window_key, newest.metric_type, newest.window_start, newest.window_end,
       newest.value, newest.count
FROM pairs p
CROSS JOIN LATERAL (
    SELECT m.window_key, m.metric_type, m.window_start, m.window_end, m.value, m.count
    FROM metrics_agg m
    WHERE m.window_key = p.window_key
      AND m.metric_type = p.metric_type
      AND m.window_start > now() - make_interval(mins => %(since_minutes)s)
    ORDER BY m.window_start DESC
    LIMIT 1) newest
ORDER BY newest.window_key, newest.metric_type

-- name: services
-- The dashboard's services table: per window key, over [since, until), three series as JSON
-- arrays of [window_start, number], oldest first: log lines per second (in the window
-- over the part of the window that has passed, so the newest, still open window is not read
-- as a drop), the error rate, and the p95 of the latency metric. One range scan of
-- idx_metrics_agg_window_start for the span (30 minutes of 10-s slides is 180 windows per key
-- and type), the JSON built here as for series. %(max_keys)s bounds the answer's size.
WITH recent AS (
    SELECT window_key, metric_type, window_start,
           CASE metric_type
               WHEN 'log_count' THEN value / greatest(
                   extract(epoch FROM least(now(), window_end) - window_start), 1)
               WHEN 'error_rate' THEN value
               ELSE p95
           END AS y
    FROM metrics_agg
    WHERE window_start >= %(since)s
      AND window_start < %(until)s
      AND metric_type IN ('log_count', 'error_rate', %(latency_metric)s)
),
per_key AS (
    SELECT window_key,
           coalesce(json_agg(json_build_array(window_start, y) ORDER BY window_start)
                    FILTER (WHERE metric_type = 'log_count'), '[]') AS logs_per_s,
           coalesce(json_agg(json_build_array(window_start, y) ORDER BY window_start)
                    FILTER (WHERE metric_type = 'error_rate'), '[]') AS error_rate,
           coalesce(json_agg(json_build_array(window_start, y) ORDER BY window_start)
                    FILTER (WHERE metric_type = %(latency_metric)s), '[]') AS latency_p95
    FROM recent
    GROUP BY window_key
    ORDER BY window_key
    LIMIT %(max_keys)s
)
SELECT coalesce(json_agg(json_build_object(
           'window_key', window_key, 'logs_per_s', logs_per_s, 'error_rate', error_rate,
           'latency_p95', latency_p95) ORDER BY window_key), '[]')::text
FROM per_key
