-- Stage 2, the windows: a batch's window partials merged into metrics_agg, inside the ingest
-- checkpoint's transaction (rtmh.windows.store). Every field merges additively (count, sum,
-- sketch buckets) or by min/max, so late events, replays and any number of workers converge.

-- name: create_stage
-- The stage is a temp table per connection, emptied at commit: each checkpoint reuses it without
-- a TRUNCATE. Columns in the order rtmh.windows.store.partial_rows gives them (STAGE_COLUMNS).
-- toast_tuple_target at its maximum: a latency window's sketch is 2-4 kB of jsonb, which the
-- default (2 kB) would pglz-compress at the COPY only for the merge to decompress it again;
-- a batch's COPY measured ~1 ms faster (of ~4.5) without it; the stage is emptied at commit.
CREATE TEMP TABLE IF NOT EXISTS window_partials_stage (
    window_key    text             NOT NULL,
    metric_type   text             NOT NULL,
    window_start  bigint           NOT NULL,  -- epoch seconds
    window_end    bigint           NOT NULL,
    count         bigint           NOT NULL,
    sum           double precision NOT NULL,
    min           double precision,
    max           double precision,
    -- Partial.percentiles(): what a new metrics_agg row stores (saves SQL a sort per new row)
    p50           double precision,
    p95           double precision,
    p99           double precision,
    sketch        jsonb
) WITH (toast_tuple_target = 8160) ON COMMIT DELETE ROWS

-- name: copy_stage
COPY window_partials_stage (window_key, metric_type, window_start, window_end, count, sum, min,
                            max, p50, p95, p99, sketch) FROM STDIN

-- name: merge_stage
-- Upsert of the stage into metrics_agg. Why it looks the way it does:
-- - one stage row per key (build_partials guarantees it): ON CONFLICT cannot touch a row twice;
-- - ORDER BY the key: concurrent workers lock shared rows in the same order, so two batches of
--   overlapping windows queue instead of deadlocking;
-- - value comes from metric_type (rtmh_window_value): EXCLUDED carries only metrics_agg columns,
--   so a staged mode column could not reach the DO UPDATE branch;
-- - OFFSET 0 keeps the merged sketch a computed-once subquery: flattened, the planner pastes
--   rtmh_sketch_merge into every target that uses it (measured 3x slower);
-- - new rows take the p50/p95/p99 Python computed; merged rows recompute them in SQL;
-- - the WHERE skips both sketch functions for the rows that hold no sketch (the counts: half
--   of a batch's rows); a sub-SELECT of no rows sets (sketch, p50, p95, p99) to NULL, what
--   the functions return for two NULL sketches.
INSERT INTO metrics_agg AS m (window_key, metric_type, window_start, window_end, value,
                              count, sum, min, max, p50, p95, p99, sketch)
SELECT window_key, metric_type, to_timestamp(window_start), to_timestamp(window_end),
       rtmh_window_value(metric_type, count, sum), count, sum, min, max, p50, p95, p99, sketch
FROM window_partials_stage
ORDER BY window_key, metric_type, window_start
ON CONFLICT (window_key, metric_type, window_start) DO UPDATE SET
    count = m.count + EXCLUDED.count,
    sum = m.sum + EXCLUDED.sum,
    min = LEAST(m.min, EXCLUDED.min),
    max = GREATEST(m.max, EXCLUDED.max),
    value = rtmh_window_value(m.metric_type, m.count + EXCLUDED.count, m.sum + EXCLUDED.sum),
    (sketch, p50, p95, p99) = (
        SELECT merged.sketch, pc.p50, pc.p95, pc.p99
        FROM (SELECT rtmh_sketch_merge(m.sketch, EXCLUDED.sketch) AS sketch OFFSET 0) AS merged
        CROSS JOIN LATERAL rtmh_sketch_percentiles(
            merged.sketch, LEAST(m.min, EXCLUDED.min), GREATEST(m.max, EXCLUDED.max)) AS pc
        WHERE m.sketch IS NOT NULL OR EXCLUDED.sketch IS NOT NULL
    )

-- name: empty_stage
-- The stage also empties at commit; emptied after each merge too, because the ingest safety net
-- merges several parts of a batch in one transaction and each must merge only its own partials.
DELETE FROM window_partials_stage
