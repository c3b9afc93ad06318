-- RTMH 006: one Kafka message may carry many records, and raw_events can be distributed by service.
--
-- OTLP (issue 20): an OpenTelemetry Collector message carries many log records or metric data
-- points. Each becomes its own raw_events row, so a message is identified by
-- (generation, topic, kafka_partition, kafka_offset) and a row by that plus record_index (0 for
-- the one record of a plain JSON message). A record refused on its own (by the decoder, or by
-- PostgreSQL) is dead-lettered with its index; NULL there means the message could not be decoded
-- into records at all.
--
-- Citus (issue 22): a distributed table's primary key and unique indexes must contain its
-- distribution column, and that column may not be NULL. raw_events is distributed by service
-- (docs/scaling.md), so the key becomes (id, service, created_at): id first keeps lookups by id
-- on the key's index, created_at is there because raw_events is partitioned by it. Every row
-- has a service already (decode dead-letters a message that cannot name one), so SET NOT NULL
-- only checks; the UPDATE is for rows written by hand before this migration.
--
-- ADD COLUMN ... DEFAULT 0 is a catalogue change (no rewrite). SET NOT NULL scans each partition
-- once and the new key is built once; both hold an ACCESS EXCLUSIVE lock meanwhile: on a large
-- table, stop the workers during `rtmh migrate` (they resume at their stored offsets).

ALTER TABLE raw_events ADD COLUMN record_index integer NOT NULL DEFAULT 0;
ALTER TABLE raw_events ADD CONSTRAINT raw_events_record_index_nonnegative
    CHECK (record_index >= 0);

COMMENT ON COLUMN raw_events.record_index IS
    'position of this record in its Kafka message (an OTLP message carries many); 0 for a plain JSON message';

UPDATE raw_events SET service = 'unknown' WHERE service IS NULL;
ALTER TABLE raw_events ALTER COLUMN service SET NOT NULL;

ALTER TABLE raw_events DROP CONSTRAINT raw_events_pkey;
ALTER TABLE raw_events ADD CONSTRAINT raw_events_pkey PRIMARY KEY (id, service, created_at);

ALTER TABLE dead_letters ADD COLUMN record_index integer;
ALTER TABLE dead_letters ADD CONSTRAINT dead_letters_record_index_nonnegative
    CHECK (record_index IS NULL OR record_index >= 0);

COMMENT ON COLUMN dead_letters.record_index IS
    'the refused record''s position in its message (payload then holds that record alone when the decoder could cut it out, else the whole message); NULL when the message could not be decoded into records';
