-- The API's live stream (rtmh.api.stream, routes/stream.py): stream_events rows, appended by
-- 007_api.sql's triggers with a NOTIFY rtmh_stream carrying the new row's id.

-- name: listen
LISTEN rtmh_stream

-- name: newest_id
-- where a freshly started broadcaster begins: clients without Last-Event-ID start live
SELECT coalesce(max(id), 0) FROM stream_events

-- name: rows_after
-- The broadcaster's catch-up read, with the snapshot it was read under (one statement, so one
-- snapshot: pg_current_snapshot() is the statement's). Ids are handed out in INSERT order but
-- become visible in COMMIT order, so a missing id below a visible one may still be in flight;
-- the snapshot's xmin/xmax tell when every transaction that could hold it has ended
-- (rtmh.api.stream.Broadcaster._settle). The LEFT JOIN returns the snapshot when no row is new.
WITH snap AS (SELECT pg_current_snapshot() AS s)
SELECT pg_snapshot_xmin(snap.s)::text::bigint AS xmin,
       pg_snapshot_xmax(snap.s)::text::bigint AS xmax,
       e.id, e.kind, e.data, e.created_at
FROM snap
LEFT JOIN LATERAL (
    SELECT id, kind, data, created_at
    FROM stream_events
    WHERE id > %(after)s
    ORDER BY id
    LIMIT %(limit)s
) e ON true
ORDER BY e.id

-- name: rows_by_id
-- rows that committed after the broadcaster gave up waiting for them (rare: a transaction held
-- its id for longer than the gap wait), delivered late rather than never
SELECT id, kind, data, created_at
FROM stream_events
WHERE id = ANY(%s)
ORDER BY id

-- name: replay
-- what a client resuming with Last-Event-ID missed, up to where the live stream took over
-- (the broadcaster's watermark when the client subscribed), in pages
SELECT id, kind, data, created_at
FROM stream_events
WHERE id > %(after)s AND id <= %(upto)s AND kind = ANY(%(kinds)s)
ORDER BY id
LIMIT %(limit)s

-- name: prune
-- a day of history is what Last-Event-ID can resume over; idx_stream_events_created finds it
DELETE FROM stream_events WHERE created_at < now() - make_interval(secs => %s)
