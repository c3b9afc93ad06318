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

-- Citus (rtmh.db.citus, `rtmh migrate --distribute`, docs/scaling.md). Parameters are the
-- constants of rtmh.db.citus (table names, columns, function signatures), never user input.

-- name: citus_installed
SELECT extversion FROM pg_extension WHERE extname = 'citus'

-- name: citus_available
-- Installed on this server but not created in this database.
SELECT default_version FROM pg_available_extensions WHERE name = 'citus'

-- name: citus_coordinator_in_metadata
-- The coordinator is group 0 of pg_dist_node once citus_set_coordinator_host ran.
SELECT 1 FROM pg_dist_node WHERE groupid = 0

-- name: citus_table_distributed
-- Already a Citus table (distributed, reference, or local in metadata): its call is skipped.
SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass(%s)

-- name: citus_function_distributed
SELECT 1 FROM pg_dist_object
WHERE classid = 'pg_proc'::regclass AND objid = to_regprocedure(%s)

-- name: citus_distribute_function
SELECT create_distributed_function(%s)

-- name: citus_allow_triggers
-- Citus refuses to distribute a table with triggers unless this is on for the session; the
-- triggers then run on the shards (docs/scaling.md lists which tables have them and why safe).
SET citus.enable_unsafe_triggers TO on

-- name: citus_create_reference_table
SELECT create_reference_table(%s)

-- name: citus_add_local_table_to_metadata
SELECT citus_add_local_table_to_metadata(%s)

-- name: citus_create_distributed_table
SELECT create_distributed_table(%s, %s)

-- name: citus_create_colocated_table
SELECT create_distributed_table(%s, %s, colocate_with => %s)
