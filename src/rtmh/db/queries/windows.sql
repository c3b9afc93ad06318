-- Stage 2, the windows: a batch's window partials merged into metrics_agg, inside the ingest
-- checkpoint's transaction (rtmh.windows.store). Every field merges additively (count, sum,
-- sketch buckets) or by min/max, so late events, replays and any number of workers converge.
--
-- Two steps. merge_stage upserts the plain columns in SQL, locking each row it touches, and
-- hands back the metric windows' stored sketches; the worker adds its partial sketches to them
-- in Python and writes them back with their p50/p95/p99 (update_sketches), under those locks.
-- Why not in SQL: migration 003's PL/pgSQL merge and percentile functions were most of the
-- stage's cost. A 630-row batch (21 keys, 6 windows, 252 of them with a 260-bucket sketch)
-- merged in 143 ms with them and in 86-91 ms this way (median of 250 batches, same machine, the
-- stored rows identical to the byte). The functions stay, for queries. Since the sketches'
-- stores are written dense (rtmh.windows.sketch, migration 010), jsonb no longer parses and
-- pglz-compresses ~5 kB objects here: 91-95 -> 49-54 ms, the same content.

-- name: create_stage
-- The stage is a temp table per connection, emptied at commit: each checkpoint reuses it without
-- a TRUNCATE. Columns in the order rtmh.windows.store.partial_rows gives them (STAGE_COLUMNS).
CREATE TEMP TABLE IF NOT EXISTS window_partials_stage (
    window_key    text             NOT NULL,
    metric_type   text             NOT NULL,
    window_start  bigint           NOT NULL,  -- epoch seconds
    window_end    bigint           NOT NULL,
    count         bigint           NOT NULL,
    sum           double precision NOT NULL,
    min           double precision,
    max           double precision
) ON COMMIT DELETE ROWS

-- name: copy_stage
COPY window_partials_stage (window_key, metric_type, window_start, window_end, count, sum, min,
                            max) FROM STDIN

-- name: merge_stage
-- Upsert of the stage's plain columns into metrics_agg; returns, for each metric window (the
-- rows with a sketch: rtmh_window_mode 'mean'), its merged min/max and the sketch stored before
-- this batch (NULL for a new row: the upsert never writes sketch or percentiles). Why:
-- - one stage row per key (build_partials guarantees it): ON CONFLICT cannot touch a row twice;
-- - ORDER BY the key: concurrent workers lock shared rows in the same order, so two batches of
--   overlapping windows queue instead of deadlocking; the locks hold to commit, so no other
--   worker can change a sketch between this read and update_sketches;
-- - value comes from metric_type (rtmh_window_value): EXCLUDED carries only metrics_agg columns,
--   so a staged mode column could not reach the DO UPDATE branch.
WITH merged AS (
    INSERT INTO metrics_agg AS m (window_key, metric_type, window_start, window_end, value,
                                  count, sum, min, max)
    SELECT window_key, metric_type, to_timestamp(window_start), to_timestamp(window_end),
           rtmh_window_value(metric_type, count, sum), count, sum, min, max
    FROM window_partials_stage
    ORDER BY window_key, metric_type, window_start
    ON CONFLICT (window_key, metric_type, window_start) DO UPDATE SET
        count = m.count + EXCLUDED.count,
        sum = m.sum + EXCLUDED.sum,
        min = LEAST(m.min, EXCLUDED.min),
        max = GREATEST(m.max, EXCLUDED.max),
        value = rtmh_window_value(m.metric_type, m.count + EXCLUDED.count, m.sum + EXCLUDED.sum)
    RETURNING window_key, metric_type, window_start, min, max, sketch
)
SELECT window_key, metric_type, extract(epoch FROM window_start)::bigint, min, max, sketch::text
FROM merged
WHERE rtmh_window_mode(metric_type) = 'mean'

-- name: empty_stage
-- The stage also empties at commit; emptied after each merge too, because the ingest safety net
-- merges several parts of a batch in one transaction and each must merge only its own partials.
DELETE FROM window_partials_stage

-- name: create_sketch_stage
-- The merged sketches and their percentiles, keyed like metrics_agg. toast_tuple_target at its
-- maximum: a dense sketch is ~1 kB, but one with spread-out (sparse) stores can be several kB
-- of jsonb, which the default (2 kB) would pglz-compress at the COPY only for the update to
-- decompress it again.
CREATE TEMP TABLE IF NOT EXISTS window_sketch_stage (
    window_key    text             NOT NULL,
    metric_type   text             NOT NULL,
    window_start  bigint           NOT NULL,  -- epoch seconds
    p50           double precision,
    p95           double precision,
    p99           double precision,
    sketch        jsonb            NOT NULL
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS

-- name: copy_sketch_stage
COPY window_sketch_stage (window_key, metric_type, window_start, p50, p95, p99, sketch) FROM STDIN

-- name: update_sketches
-- Every row here was locked by merge_stage in this transaction.
UPDATE metrics_agg AS m
SET sketch = s.sketch, p50 = s.p50, p95 = s.p95, p99 = s.p99
FROM window_sketch_stage AS s
WHERE m.window_key = s.window_key
  AND m.metric_type = s.metric_type
  AND m.window_start = to_timestamp(s.window_start)

-- name: empty_sketch_stage
DELETE FROM window_sketch_stage
