-- RTMH 004: Kafka keys that are not clean text are kept byte for byte.
-- message_key is text, and PostgreSQL text cannot hold NUL or bytes that are not UTF-8: one such
-- key used to stop the COPY of its whole batch. Now message_key holds the key when it is valid
-- UTF-8 without NUL; otherwise it holds a readable escaped form (undecodable bytes and NUL as
-- \xNN) and message_key_bytes holds the exact bytes. For clean keys message_key_bytes is NULL.
-- A nullable column without a default: a catalogue change only, no table rewrite.
ALTER TABLE raw_events ADD COLUMN message_key_bytes bytea;

COMMENT ON COLUMN raw_events.message_key_bytes IS
    'the exact Kafka key when it is not valid UTF-8 or holds NUL (message_key then has an escaped form); NULL otherwise';
