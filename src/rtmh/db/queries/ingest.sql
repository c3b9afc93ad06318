-- Stage 1, ingest: the only writer of raw_events, dead_letters and consumer_offsets
-- (rtmh.ingest.store). The checkpoint runs these in one transaction: fence, rows, dead letters,
-- window partials (windows.sql), offsets.

-- name: copy_raw_events
-- Columns in the order rtmh.ingest.copy_text formats its COPY text (RAW_COLUMNS).
COPY raw_events (topic, kafka_partition, kafka_offset, record_index, generation, message_key,
                 message_key_bytes, data, event_time, service, host, level, flags) FROM STDIN

-- name: copy_dead_letters
COPY dead_letters (topic, kafka_partition, kafka_offset, generation, message_key, payload, reason,
                   broker_time, record_index) FROM STDIN

-- name: lock_offsets
-- The fence. Rows are locked in one order for every worker: two workers whose batches share
-- partitions then queue on the first shared row instead of each holding one the other waits
-- for (a deadlock).
SELECT topic, kafka_partition, generation, next_offset, last_digest
FROM consumer_offsets
WHERE group_id = %s
  AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
ORDER BY topic, kafka_partition
FOR UPDATE

-- name: load_offsets
-- On assignment and after a fenced batch (primary key: group_id, topic, kafka_partition).
SELECT topic, kafka_partition, generation, next_offset, last_digest, topic_id
FROM consumer_offsets
WHERE group_id = %s AND topic = ANY(%s::text[])

-- name: update_offset
UPDATE consumer_offsets
SET generation = %s, next_offset = %s, last_digest = %s, topic_id = %s, updated_at = now()
WHERE group_id = %s AND topic = %s AND kafka_partition = %s

-- name: insert_offset
-- A partition's first commit; two workers racing here meet on the primary key (a fenced batch).
INSERT INTO consumer_offsets (group_id, topic, kafka_partition, generation, next_offset,
                              last_digest, topic_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)

-- name: roll_offsets
-- The embedded broker's topic was deleted and created again after this group had committed all
-- of it (rtmh.embedded.log_roll): each partition's next message is offset 0 of the new log, one
-- generation on, so (generation, offset) stays unique. A worker still reading the old log is
-- fenced by the row it no longer expects and reads again from here. Nothing else moves these
-- rows meanwhile: the roll runs only once the group has committed every acknowledged message,
-- and the gate holds every new write until it is done.
UPDATE consumer_offsets
SET generation = generation + 1, next_offset = 0, last_digest = NULL, topic_id = %(topic_id)s,
    updated_at = now()
WHERE group_id = %(group_id)s AND topic = %(topic)s
RETURNING kafka_partition

-- name: find_invalid_json
-- The safety net: every row whose JSON PostgreSQL refuses as jsonb, in one query (numbers beyond
-- its numeric range in keys the decoder skips, lone surrogate escapes).
SELECT i - 1, (pg_input_error_info(d, 'jsonb')).message
FROM unnest(%s::text[]) WITH ORDINALITY AS t(d, i)
WHERE NOT pg_input_is_valid(d, 'jsonb')

-- name: maintain_partitions
-- Daily raw_events partitions ahead, and the ones past retention dropped (migration 001).
SELECT rtmh_maintain_partitions(%s, %s)
