# Shared by migrate.sh and migrate-docker.sh; `rtmh migrate` (src/rtmh/db/migrate.py) does the same.
# The caller defines run_psql (a psql reading SQL on stdin) and DESCRIBE_TARGET, then calls main "$@".
# Contract shared by all three migrators: table schema_migrations (version = file name,
# checksum = sha256 of the file bytes, applied_at), one transaction per file, advisory lock 7245610001.

set -euo pipefail

LOCK_KEY=7245610001
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MIGRATIONS_DIR="${MIGRATIONS_DIR:-$here/../../src/rtmh/db/migrations}"

fail() { echo "error: $*" >&2; exit 1; }

psql_query() {  # one SQL statement on stdin-less call, unaligned tuples out
    printf '%s\n' "$1" | run_psql -X -q -A -t -v ON_ERROR_STOP=1
}

check_connection() {
    local out
    if ! out=$(psql_query "SELECT current_database() || ' as ' || current_user || ' on ' || split_part(version(), ' ', 2)" 2>&1); then
        local first
        first=$(printf '%s\n' "$out" | grep -v '^\s*$' | head -n 1)
        fail "cannot connect to PostgreSQL at $DESCRIBE_TARGET: ${first:-no answer} ($CONNECT_HINT)"
    fi
    printf '%s\n' "$out" | tail -n 1
}

migration_files() {
    [ -d "$MIGRATIONS_DIR" ] || fail "no migrations folder at $MIGRATIONS_DIR (set MIGRATIONS_DIR)"
    find "$MIGRATIONS_DIR" -maxdepth 1 -name '*.sql' -printf '%f\n' | LC_ALL=C sort
}

checksum() { sha256sum "$MIGRATIONS_DIR/$1" | cut -d' ' -f1; }

applied_list() {  # "version checksum applied_at" lines; nothing when the table does not exist
    if [ "$(psql_query "SELECT to_regclass('schema_migrations') IS NOT NULL")" = "t" ]; then
        psql_query "SELECT version || ' ' || checksum || ' ' || to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM schema_migrations ORDER BY version"
    fi
}

cmd_status() {
    check_connection >/dev/null
    local applied file line sum state
    applied=$(applied_list)
    printf '%-40s %-9s %s\n' "MIGRATION" "STATE" "APPLIED AT"
    while read -r file; do
        line=$(printf '%s\n' "$applied" | awk -v v="$file" '$1 == v' || true)
        if [ -z "$line" ]; then
            printf '%-40s %-9s %s\n' "$file" "pending" "-"
            continue
        fi
        sum=$(checksum "$file")
        state=applied
        [ "$(echo "$line" | cut -d' ' -f2)" = "$sum" ] || state=changed
        printf '%-40s %-9s %s\n' "$file" "$state" "$(echo "$line" | cut -d' ' -f3)"
    done < <(migration_files)
}

apply_file() {  # prints "applied" or "skipped"; the lock and the re-check run inside the transaction
    local file="$1" sum="$2"
    {
        echo '\set ON_ERROR_STOP 1'
        echo 'BEGIN;'
        echo "SELECT pg_advisory_xact_lock($LOCK_KEY);"
        echo "SELECT count(*) > 0 AS rtmh_done FROM schema_migrations WHERE version = '$file' \\gset"
        echo '\if :rtmh_done'
        echo '\echo rtmh:skipped'
        echo '\else'
        cat "$MIGRATIONS_DIR/$file"
        echo
        echo "INSERT INTO schema_migrations (version, checksum) VALUES ('$file', '$sum');"
        echo '\echo rtmh:applied'
        echo '\endif'
        echo 'COMMIT;'
    } | run_psql -X -q -v ON_ERROR_STOP=1 2>&1
}

cmd_apply() {
    check_connection >/dev/null
    psql_query "SET client_min_messages = warning; BEGIN; SELECT pg_advisory_xact_lock($LOCK_KEY); CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now()); COMMIT;" >/dev/null
    local applied file line sum out count=0
    applied=$(applied_list)
    # refuse to run on top of an applied file that changed since
    while read -r file; do
        line=$(printf '%s\n' "$applied" | awk -v v="$file" '$1 == v' || true)
        [ -z "$line" ] && continue
        [ "$(echo "$line" | cut -d' ' -f2)" = "$(checksum "$file")" ] ||
            fail "migration $file was changed after it was applied (checksum differs from schema_migrations): restore the original file and put the change in a new migration"
    done < <(migration_files)
    while read -r file; do
        printf '%s\n' "$applied" | awk -v v="$file" '$1 == v {found=1} END {exit !found}' && continue
        sum=$(checksum "$file")
        if ! out=$(apply_file "$file" "$sum"); then
            fail "migration $file failed and was rolled back: $(printf '%s\n' "$out" | grep -m1 -E 'ERROR|FATAL' || printf '%s\n' "$out" | tail -n 1)"
        fi
        case "$out" in
            *rtmh:applied*) echo "applied $file"; count=$((count + 1)) ;;
            *) echo "skipped $file (applied by a concurrent run)" ;;
        esac
    done < <(migration_files)
    [ "$count" -gt 0 ] || echo "nothing to apply: the database is up to date"
}

main() {
    case "${1:-}" in
        --test) local info; info=$(check_connection); echo "connection ok: $info" ;;
        --status) cmd_status ;;
        "") cmd_apply ;;
        -h|--help) echo "usage: $(basename "$0") [--test|--status]"; echo "  (no option) apply pending migrations"; echo "  --test      test the database connection"; echo "  --status    list applied and pending migrations" ;;
        *) fail "unknown option $1 (use --test, --status or nothing)" ;;
    esac
}
