#!/usr/bin/env bash
# Apply RTMH's migrations with the local psql client: ./infra/migrate.sh [--test|--status]
# POSTGRES_URL=postgres://rtuser:rtpass@localhost:5432/rt_monitoring (that is also the default).
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/lib/migrate-common.sh"

POSTGRES_URL="${POSTGRES_URL:-postgres://rtuser:rtpass@localhost:5432/rt_monitoring}"
command -v psql >/dev/null || fail "psql is not installed: install the PostgreSQL client (apt-get install postgresql-client) or use infra/migrate-docker.sh"
DESCRIBE_TARGET=$(printf '%s' "$POSTGRES_URL" | sed -E 's#^[a-z]+://([^:@/]*(:[^@/]*)?@)?##')
CONNECT_HINT="check POSTGRES_URL and that the server is running"

run_psql() { PGCONNECT_TIMEOUT="${PGCONNECT_TIMEOUT:-5}" psql "$POSTGRES_URL" "$@"; }

main "$@"
