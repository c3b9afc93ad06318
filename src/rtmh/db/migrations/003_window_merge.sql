-- RTMH 003: merging sliding-window partials into metrics_agg.
-- The SQL half of src/rtmh/windows/: the sketch merge and quantile estimate (same math as
-- rtmh.windows.sketch), and the value formula per metric type (same as rtmh.windows.partials).
-- The worker stages a batch's partials in the temp table window_partials_stage and runs the
-- upsert named MERGE_PARTIALS_SQL in rtmh/windows/partials.py, which calls these functions.
-- Plain SQL, no table changes: every function is IMMUTABLE and safe to re-create.

------------------------------------------------------------------------------------------------
-- Value formula. metrics_agg has no mode column and ON CONFLICT's EXCLUDED row only carries
-- metrics_agg's columns, so the formula is a fixed function of metric_type (the Python side
-- renames metric samples that would collide with the four built-in types):
--   log_count, event_count  'count'  value = count
--   error_count             'sum'    value = sum        (count = log lines, sum = errors)
--   error_rate              'ratio'  value = sum/count  (count = log lines, sum = errors)
--   any metric name         'mean'   value = sum/count  (with min, max and a sketch)
------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION rtmh_window_mode(p_metric_type text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_metric_type
        WHEN 'log_count' THEN 'count'
        WHEN 'event_count' THEN 'count'
        WHEN 'error_count' THEN 'sum'
        WHEN 'error_rate' THEN 'ratio'
        ELSE 'mean'
    END
$$;

CREATE OR REPLACE FUNCTION rtmh_window_value(p_metric_type text, p_count bigint, p_sum float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE rtmh_window_mode(p_metric_type)
        WHEN 'count' THEN p_count::float8
        WHEN 'sum' THEN p_sum
        ELSE p_sum / NULLIF(p_count, 0)
    END
$$;

------------------------------------------------------------------------------------------------
-- Sketch: {"p": {"<k>": n, ...}, "n": {"<k>": n, ...}, "z": n}, gamma = 1.01 / 0.99, bucket k
-- estimates 2 * gamma^k / (gamma + 1); see rtmh/windows/sketch.py for the full description.
------------------------------------------------------------------------------------------------

-- One store (the "p" or the "n" object): counts added key by key, then the buckets below the
-- max_buckets-th highest key folded into it (collapse lowest, as in Python: associative).
-- Walks b only and looks each key up in a (jsonb object lookup is a binary search), so merging
-- a batch's small partial into a window's large sketch costs O(|b| log |a|), not O(|a| + |b|).
CREATE OR REPLACE FUNCTION rtmh_sketch_merge_store(a jsonb, b jsonb,
                                                   max_buckets integer DEFAULT 2048)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    merged jsonb;
BEGIN
    IF a IS NULL OR a = '{}'::jsonb THEN
        merged := coalesce(b, '{}'::jsonb);
    ELSIF b IS NULL OR b = '{}'::jsonb THEN
        RETURN a;
    ELSE
        merged := a || (SELECT jsonb_object_agg(e.key,
                                                e.value::bigint + coalesce((a ->> e.key)::bigint, 0))
                        FROM jsonb_each_text(b) AS e);
    END IF;
    -- A bucket holds at least 9 bytes (two 4-byte entry headers and a key byte), so a small
    -- object cannot be over the bound: skip counting keys on the path every batch takes.
    IF pg_column_size(merged) <= 9 * max_buckets
       OR (SELECT count(*) FROM jsonb_object_keys(merged)) <= max_buckets THEN
        RETURN merged;
    END IF;
    RETURN (
        WITH ranked AS (
            SELECT key::integer AS k, value::bigint AS c,
                   row_number() OVER (ORDER BY key::integer DESC) AS rn
            FROM jsonb_each_text(merged)
        ), floor_key AS (
            SELECT k FROM ranked WHERE rn = max_buckets
        )
        SELECT jsonb_object_agg(folded.k, folded.c)
        FROM (
            SELECT CASE WHEN r.rn > max_buckets THEN f.k ELSE r.k END AS k, sum(r.c) AS c
            FROM ranked AS r CROSS JOIN floor_key AS f
            GROUP BY 1
        ) AS folded
    );
END;
$$;

-- Additive merge of two sketches; null-safe (null + s = s, null + null = null).
CREATE OR REPLACE FUNCTION rtmh_sketch_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN a IS NULL THEN b
        WHEN b IS NULL THEN a
        ELSE jsonb_build_object(
            'p', rtmh_sketch_merge_store(a -> 'p', b -> 'p'),
            'n', rtmh_sketch_merge_store(a -> 'n', b -> 'n'),
            'z', coalesce((a ->> 'z')::bigint, 0) + coalesce((b ->> 'z')::bigint, 0))
    END
$$;

-- Several quantiles in one sort of the buckets (the merge statement needs p50, p95 and p99).
-- Buckets in ascending value order (negatives by descending key, zero, positives by ascending
-- key); each answer is the first bucket whose running count exceeds q * (count - 1): DDSketch's
-- estimate, identical to Sketch.quantiles in Python. NULL for an empty/NULL sketch or q outside
-- [0, 1].
CREATE OR REPLACE FUNCTION rtmh_sketch_quantiles(s jsonb, qs float8[]) RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH buckets AS (
        SELECT -1 AS sign, key::integer AS k, value::float8 AS c
        FROM jsonb_each_text(s -> 'n')
        UNION ALL
        SELECT 0, 0, (s ->> 'z')::float8 WHERE (s ->> 'z')::float8 > 0
        UNION ALL
        SELECT 1, key::integer, value::float8
        FROM jsonb_each_text(s -> 'p')
    ), running AS (
        SELECT sign, k,
               sum(c) OVER (ORDER BY sign, sign * k ROWS UNBOUNDED PRECEDING) AS below,
               sum(c) OVER () AS total
        FROM buckets
    ), g AS (
        SELECT (1.0::float8 + 0.01::float8) / (1.0::float8 - 0.01::float8) AS gamma
    )
    SELECT array_agg(
        (SELECT CASE r.sign WHEN 0 THEN 0::float8
                ELSE r.sign * (2 * power(g.gamma, r.k::float8) / (g.gamma + 1)) END
         FROM running AS r CROSS JOIN g
         WHERE u.q BETWEEN 0 AND 1 AND r.below > u.q * (r.total - 1)
         ORDER BY r.below
         LIMIT 1)
        ORDER BY u.ord)
    FROM unnest(qs) WITH ORDINALITY AS u(q, ord)
$$;

CREATE OR REPLACE FUNCTION rtmh_sketch_quantile(s jsonb, q float8) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT (rtmh_sketch_quantiles(s, ARRAY[q]))[1]
$$;

-- What metrics_agg stores in p50/p95/p99: the estimates clamped to the row's [lo, hi] (the true
-- quantile lies there, so clamping never adds error); NULL when there is no sketch. Mirrors
-- Partial.percentiles in Python.
CREATE OR REPLACE FUNCTION rtmh_sketch_percentiles(s jsonb, lo float8, hi float8)
RETURNS float8[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN s IS NOT NULL THEN (
        SELECT array_agg(CASE WHEN u.v IS NOT NULL THEN LEAST(GREATEST(u.v, lo), hi) END
                         ORDER BY u.i)
        FROM unnest(rtmh_sketch_quantiles(s, '{0.5,0.95,0.99}')) WITH ORDINALITY AS u(v, i))
    END
$$;

------------------------------------------------------------------------------------------------
-- The staging table and the merge statement live in rtmh/windows/partials.py (STAGE_TABLE_SQL,
-- MERGE_PARTIALS_SQL), next to the code that fills them; they are, for reference:
--   CREATE TEMP TABLE IF NOT EXISTS window_partials_stage (window_key text, metric_type text,
--       window_start bigint, window_end bigint, count bigint, sum float8, min float8,
--       max float8, sketch jsonb) ON COMMIT DELETE ROWS;
--   INSERT INTO metrics_agg ... SELECT ... FROM window_partials_stage ORDER BY the key
--   ON CONFLICT (window_key, metric_type, window_start) DO UPDATE SET count/sum added,
--   min/max LEAST/GREATEST, sketch = rtmh_sketch_merge(...), value = rtmh_window_value(...),
--   p50/p95/p99 = rtmh_sketch_percentiles(merged sketch, min, max) (NULL without a sketch).
------------------------------------------------------------------------------------------------
