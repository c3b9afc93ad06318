-- Dead letters for people (rtmh.service.dead_letters): the list, newest first, and one with its
-- bytes. The ingest stage writes them (ingest.sql); nothing here changes them.

-- name: list_dead_letters
-- Newest first, keyset-paginated on (created_at, id): a backward scan of
-- idx_dead_letters_created (created_at) that stops after %(limit)s rows, with an incremental
-- sort for the id tie-break. The explicit created_at <= bound lets the row comparison's first
-- column bound the index scan. A filter left NULL folds away when the statement is planned with
-- its parameters (the API never prepares statements). size is the payload's length: the bytes
-- themselves only come with one dead letter.
SELECT id, topic, kafka_partition AS partition, kafka_offset AS "offset", generation,
       record_index, reason, broker_time, created_at, octet_length(payload) AS size
FROM dead_letters
WHERE (%(topic)s::text IS NULL OR topic = %(topic)s::text)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s::timestamptz)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s::timestamptz)
  AND (%(after_created)s::timestamptz IS NULL
       OR (created_at <= %(after_created)s::timestamptz
           AND (created_at, id) < (%(after_created)s::timestamptz, %(after_id)s::bigint)))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s

-- name: get_dead_letter
-- By primary key, with the key and payload bytes.
SELECT id, topic, kafka_partition AS partition, kafka_offset AS "offset", generation,
       record_index, reason, broker_time, created_at, octet_length(payload) AS size,
       message_key, payload
FROM dead_letters
WHERE id = %s

-- name: summary
-- For the dashboard's ingest health: how many, how many lately, the newest. Dead letters are
-- rare (a malformed message each), so counting them is cheap; the last hour reads
-- idx_dead_letters_created.
SELECT count(*) AS total,
       count(*) FILTER (WHERE created_at > now() - interval '1 hour') AS last_hour,
       max(created_at) AS newest_at
FROM dead_letters
