-- The migrator's own bookkeeping (rtmh.db.migrate): which files were applied, with their checksums.
-- The shell migrators (infra/lib/migrate-common.sh) keep the same table and the same lock.

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: schema_migrations_exists
SELECT to_regclass('schema_migrations') IS NOT NULL

-- name: applied_migrations
SELECT version, checksum, applied_at FROM schema_migrations

-- name: lock_migrations
-- Two runs of any migrator never apply concurrently (the key is MIGRATION_LOCK_KEY).
SELECT pg_advisory_xact_lock(%s)

-- name: applied_checksum
SELECT checksum FROM schema_migrations WHERE version = %s

-- name: record_migration
INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)
