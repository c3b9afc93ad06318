-- RTMH 010: sketches whose stores are dense.
--
-- rtmh.windows.sketch now writes a store whose keys are close together as one string of
-- counts, [first key, "c0,c1,c2,..."], instead of an object of key -> count (see that module:
-- a 260-bucket latency window shrinks from ~5 kB of jsonb, pglz-compressed at every write, to
-- ~0.9 kB, and the window merge from 75 to 47 ms a batch). A store whose keys are spread out
-- stays an object, and rows written before this migration keep their objects: both shapes
-- are valid, in every row, for good.
--
-- The SQL functions of 003 read objects only. rtmh_sketch_store turns either shape into the
-- object, and the two functions that read stores call it first; the others go through them.
-- What they return is unchanged (a merge returns objects, which the worker reads too). No table
-- changes: every function here is IMMUTABLE and safe to re-create.

-- A store as an object of key -> count: a dense store expanded (its empty buckets left out),
-- an object or NULL returned as it is.
CREATE OR REPLACE FUNCTION rtmh_sketch_store(store jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN jsonb_typeof(store) = 'array' THEN (
            SELECT coalesce(
                jsonb_object_agg((store ->> 0)::bigint + u.i - 1, u.c::bigint)
                    FILTER (WHERE u.c::bigint <> 0),
                '{}'::jsonb)
            FROM unnest(string_to_array(store ->> 1, ',')) WITH ORDINALITY AS u(c, i))
        ELSE store
    END
$$;

-- As in 003, with both stores read through rtmh_sketch_store.
CREATE OR REPLACE FUNCTION rtmh_sketch_merge_store(a jsonb, b jsonb,
                                                   max_buckets integer DEFAULT 2048)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    merged jsonb;
BEGIN
    a := rtmh_sketch_store(a);
    b := rtmh_sketch_store(b);
    IF a IS NULL OR a = '{}'::jsonb THEN
        merged := coalesce(b, '{}'::jsonb);
    ELSIF b IS NULL OR b = '{}'::jsonb THEN
        RETURN a;
    ELSE
        merged := a || (SELECT jsonb_object_agg(e.key,
                                                e.value::bigint + coalesce((a ->> e.key)::bigint, 0))
                        FROM jsonb_each_text(b) AS e);
    END IF;
    -- counting keys costs ~10 % of a merge; the fold below runs only past the bound
    IF (SELECT count(*) FROM jsonb_object_keys(merged)) <= max_buckets THEN
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

-- As in 003, with both stores read through rtmh_sketch_store.
CREATE OR REPLACE FUNCTION rtmh_sketch_ranks(s jsonb)
RETURNS TABLE (est float8, below float8, total float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    WITH g AS (
        SELECT (1.0::float8 + 0.01::float8) / (1.0::float8 - 0.01::float8) AS gamma
    ), buckets AS (
        SELECT -(2 * power(g.gamma, e.key::float8) / (g.gamma + 1)) AS est, e.value::float8 AS c
        FROM g, jsonb_each_text(rtmh_sketch_store(s -> 'n')) AS e
        UNION ALL
        SELECT 0, (s ->> 'z')::float8 WHERE (s ->> 'z')::float8 > 0
        UNION ALL
        SELECT 2 * power(g.gamma, e.key::float8) / (g.gamma + 1), e.value::float8
        FROM g, jsonb_each_text(rtmh_sketch_store(s -> 'p')) AS e
    )
    SELECT est,
           sum(c) OVER (ORDER BY est ROWS UNBOUNDED PRECEDING),
           sum(c) OVER ()
    FROM buckets
$$;
