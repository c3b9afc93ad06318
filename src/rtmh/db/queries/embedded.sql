-- The embedded PostgreSQL's first start (rtmh.embedded.postgres): its role and database.
-- Names and the password are composed with psycopg.sql (Identifier, Literal), never pasted.

-- name: role_exists
SELECT 1 FROM pg_roles WHERE rolname = %s

-- name: database_exists
SELECT 1 FROM pg_database WHERE datname = %s

-- name: create_role
CREATE ROLE {role} LOGIN SUPERUSER PASSWORD {password}

-- name: create_database_owned
CREATE DATABASE {name} OWNER {role}
