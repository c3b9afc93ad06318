-- Creating and dropping whole databases (rtmh/db/databases.py): the benchmarks' fresh databases
-- and the tests' per-test copies, cloned from a migrated template. Names are identifiers, not
-- values: the caller fills {name} / {template} with psycopg.sql.Identifier.

-- name: create_database
CREATE DATABASE {name}

-- name: create_database_from_template
-- A file-level copy of the template (~100 ms), far cheaper than migrating each new database;
-- the template must have no other session connected while it is copied.
CREATE DATABASE {name} TEMPLATE {template}

-- name: drop_database
-- FORCE: a worker or notifier that outlived its run must not keep the database alive.
DROP DATABASE IF EXISTS {name} WITH (FORCE)
