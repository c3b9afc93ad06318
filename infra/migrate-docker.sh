#!/usr/bin/env bash
# Apply RTMH's migrations inside the PostgreSQL container: ./infra/migrate-docker.sh [--test|--status]
# POSTGRES_CONTAINER (rtmh_postgres), POSTGRES_USER (rtuser), POSTGRES_DB (rt_monitoring).
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/migrate-common.sh"

POSTGRES_CONTAINER="${POSTGRES_CONTAINER:-rtmh_postgres}"
POSTGRES_USER="${POSTGRES_USER:-rtuser}"
POSTGRES_DB="${POSTGRES_DB:-rt_monitoring}"
command -v docker >/dev/null || fail "docker is not installed: use infra/migrate.sh with POSTGRES_URL instead"
DESCRIBE_TARGET="container $POSTGRES_CONTAINER (database $POSTGRES_DB, user $POSTGRES_USER)"
CONNECT_HINT="is the container running? docker-compose -f infra/docker-compose.yml up -d; docker logs $POSTGRES_CONTAINER"

# SQL goes in on stdin, so the migration files need not exist inside the container
run_psql() { docker exec -i "$POSTGRES_CONTAINER" psql -U "$POSTGRES_USER" -d "$POSTGRES_DB" "$@"; }

main "$@"
