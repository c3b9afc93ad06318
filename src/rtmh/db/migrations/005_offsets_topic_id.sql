-- RTMH 005: each stored offset remembers which log it belongs to.
-- A topic deleted and created again keeps its name and starts again at offset 0, and the
-- embedded broker forgets every topic on restart. Reading back the message before the stored
-- offset cannot always tell the two logs apart (a broker that does not answer, a log that has
-- not grown that far yet); the topic id can. NULL: stored before this migration, or the broker
-- reports no topic ids (Kafka before 2.8); the worker then falls back on the read-back alone.
ALTER TABLE consumer_offsets ADD COLUMN topic_id text;

COMMENT ON COLUMN consumer_offsets.topic_id IS
    'the broker''s id of the topic this offset belongs to (base64, as Kafka tools print it); NULL when unknown';
