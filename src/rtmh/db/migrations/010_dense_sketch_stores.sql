-- RTMH 010: sketches whose stores are dense.
--
-- rtmh.windows.sketch now writes a store whose keys are close together as one string of
-- counts, [first key, "c0,c1,c2,..."], instead of an object of key -> count (see that module:
-- a 260-bucket latency window shrinks from ~5 kB of jsonb, pglz-compressed at every write, to
-- ~0.9 kB, and the worker's window merge from 91-95 to 49-54 ms a batch). A store whose keys
-- are spread out stays an object, and rows written before this migration keep their objects:
-- both shapes are valid, in every row, for good.
--
-- The SQL functions of 003 read objects only. rtmh_sketch_store turns either shape into the
-- object. The two of them that read stores keep their bodies under new names (*_objects), and
-- their names now belong to wrappers that pass the stores through rtmh_sketch_store first; the
-- other functions go through these two. What they return is unchanged (a merge returns
-- objects, which the worker reads too). No table changes.

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

ALTER FUNCTION rtmh_sketch_merge_store(jsonb, jsonb, integer)
    RENAME TO rtmh_sketch_merge_store_objects;

CREATE FUNCTION rtmh_sketch_merge_store(a jsonb, b jsonb, max_buckets integer DEFAULT 2048)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT rtmh_sketch_merge_store_objects(rtmh_sketch_store(a), rtmh_sketch_store(b),
                                           max_buckets)
$$;

ALTER FUNCTION rtmh_sketch_ranks(jsonb) RENAME TO rtmh_sketch_ranks_objects;

CREATE FUNCTION rtmh_sketch_ranks(s jsonb)
RETURNS TABLE (est float8, below float8, total float8)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- strip_nulls: a missing store must stay missing, not become a JSON null
    SELECT * FROM rtmh_sketch_ranks_objects(jsonb_strip_nulls(
        jsonb_build_object('p', rtmh_sketch_store(s -> 'p'), 'n', rtmh_sketch_store(s -> 'n'),
                           'z', s -> 'z')))
$$;
