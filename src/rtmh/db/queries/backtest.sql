-- Rule backtest (rtmh.service.backtest): the stored windows a rule is replayed on, and the saved
-- rule to replay. Read-only. Window times cross the boundary as epoch seconds (float8), as in
-- rules.sql, because the pure evaluation (rtmh.rules) works on epoch seconds.

-- name: windows_in_range
-- Every key's windows of one metric type that start in [start, end); the window_key pattern is
-- a shell glob with special synthetic keys, matched in Python (rules.evaluate.key_matches) so the
-- backtest selects exactly the keys the engine would. The rows that close after end (or are still
-- filling) only tell the replay that a key still had data; they are not judged.
-- Index: idx_metrics_agg_window_start, a range scan on window_start with metric_type as a filter
-- (EXPLAIN ANALYZE, PostgreSQL 18, 24 h x 20 services x 3 log types, one hour asked: Bitmap
-- Index Scan, 21,600 index rows, 7,200 kept, 6.5 ms). With few keys PostgreSQL 18 may prefer a
-- skip scan of the unique index instead (one descent per key, as fast); never a Seq Scan.
-- An extra index on (metric_type, window_start) was only about a sixth faster: not worth its write cost
-- on the busiest table.
-- LIMIT: the caller refuses a range holding more windows than it replays (MAX_WINDOWS).
-- Parameters: metric_type, start, end (timestamptz), limit.
SELECT window_key, metric_type,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM window_end)::float8 AS window_end, value, count, sum, min, max,
       p50, p95, p99
FROM metrics_agg
WHERE metric_type = %s AND window_start >= %s AND window_start < %s
LIMIT %s

-- name: windows_of_key_in_range
-- The same for a rule whose pattern is one literal key (no glob characters): a range scan of the
-- unique index metrics_agg_window_unique (window_key, metric_type, window_start), which reads
-- only that key's rows however many services the table holds.
-- Parameters: window_key, metric_type, start, end (timestamptz), limit.
SELECT window_key, metric_type,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM window_end)::float8 AS window_end, value, count, sum, min, max,
       p50, p95, p99
FROM metrics_agg
WHERE window_key = %s AND metric_type = %s AND window_start >= %s AND window_start < %s
LIMIT %s
