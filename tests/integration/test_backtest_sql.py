"""The rule backtest on a real PostgreSQL: run_backtest reads metrics_agg through
db/queries/backtest.sql and replays the rule; saved rules resolve by id and name."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

import psycopg
import pytest
from msgspec.structs import replace

from rtmh.rules.model import Rule, validate_rule
from rtmh.service import backtest as backtest_module
from rtmh.service.backtest import (
    MAX_WINDOWS,
    SQL,
    BacktestResult,
    load_saved_rule,
    run_backtest,
)
from rtmh.service.errors import Conflict, Invalid, NotFound

# 60-s windows sliding by 10 s, starting on a whole hour two hours ago
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
RULE = validate_rule(
    {
        "name": "high_error_rate",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
        "resolve_after_seconds": 20,
    }
)

# One hour of log windows for %(services)s services s00, s01, ...: log_count, error_count and
# error_rate rows per window start; services below %(bursting)s have a 50 % error rate for the
# windows starting in [20 min, 25 min). Parameters: services, bursting, hour (timestamptz),
# hours (how many hours from hour).
INSERT_WINDOWS: LiteralString = """
INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value, count, sum)
SELECT key, kind.metric_type, start, start + interval '60 seconds',
       CASE kind.metric_type WHEN 'error_rate' THEN errors / 100.0 ELSE kind.n END,
       CASE kind.metric_type WHEN 'error_count' THEN errors ELSE 100 END,
       CASE kind.metric_type WHEN 'error_rate' THEN errors ELSE kind.n END
FROM generate_series(0, %(services)s - 1) AS s(i)
CROSS JOIN LATERAL (SELECT format('s%%s', lpad(s.i::text, 2, '0')) AS key) AS k
CROSS JOIN generate_series(%(hour)s::timestamptz,
                           %(hour)s::timestamptz + make_interval(hours => %(hours)s)
                               - interval '10 seconds',
                           interval '10 seconds') AS start
CROSS JOIN LATERAL (
    SELECT CASE WHEN s.i < %(bursting)s
                 AND start - date_trunc('hour', start) >= interval '20 minutes'
                 AND start - date_trunc('hour', start) < interval '25 minutes'
           THEN 50 ELSE 1 END AS errors) AS e
CROSS JOIN LATERAL (VALUES ('log_count', 100), ('error_count', e.errors),
                           ('error_rate', NULL::int)) AS kind(metric_type, n)
"""


def insert_windows(conn: psycopg.Connection[Any], services: int, bursting: int, hours: int) -> None:
    conn.execute(
        INSERT_WINDOWS,
        {"services": services, "bursting": bursting, "hour": HOUR, "hours": hours},
    )
    conn.execute("ANALYZE metrics_agg")


def backtest(db_url: str, rule: Rule = RULE) -> BacktestResult:
    async def go() -> BacktestResult:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            return await run_backtest(conn, rule, HOUR, HOUR + timedelta(hours=1))

    return asyncio.run(go())


def at(minutes: float) -> datetime:
    return HOUR + timedelta(minutes=minutes)


def test_a_burst_in_metrics_agg_gives_one_incident_per_bursting_service(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_windows(conn, services=4, bursting=2, hours=1)

    result = backtest(db_url)

    assert [i.window_key for i in result.incidents] == ["s00", "s01"]
    for incident in result.incidents:
        # the window starting at 20:00 closes at 21:00; the last bursting one starts at 24:50,
        # the first clear one closes at 26:00 and 20 s later is the close at 26:20
        assert incident.opened_at == at(21)
        assert incident.resolved_at == at(26 + 1 / 3)
        assert incident.peak_value == 0.5
    summary = result.summary
    assert (summary.keys_matched, summary.incidents, summary.live_at_end) == (4, 2, 0)
    assert summary.windows_evaluated == 4 * (360 - 5)  # windows closing within the hour


def test_a_literal_pattern_reads_one_key(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_windows(conn, services=4, bursting=2, hours=1)

    result = backtest(db_url, replace(RULE, window_key_pattern="s01"))

    assert [i.window_key for i in result.incidents] == ["s01"]
    assert result.summary.keys_matched == 1


def test_a_range_holding_more_windows_than_the_budget_is_refused(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_windows(conn, services=4, bursting=2, hours=1)
    monkeypatch.setattr(backtest_module, "MAX_WINDOWS", 4 * 360 - 1)

    with pytest.raises(Invalid, match="more than 1,439 error_rate windows") as err:
        backtest(db_url)
    assert err.value.field == "start"
    # one key's windows are within it
    assert backtest(db_url, replace(RULE, window_key_pattern="s00")).summary.incidents == 1


def test_saved_rules_resolve_by_id_and_name(db_url: str) -> None:
    async def go() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            cur = await conn.execute(
                "INSERT INTO alert_rules (name, metric_type, condition, threshold)"
                " VALUES ('bt_rule', 'error_rate', '>', 0.2) RETURNING id"
            )
            row = await cur.fetchone()
            assert row is not None
            by_id = await load_saved_rule(conn, int(row[0]))
            by_name = await load_saved_rule(conn, "bt_rule")
            assert by_id == by_name
            assert (by_id.id, by_id.name, by_id.threshold) == (row[0], "bt_rule", 0.2)
            with pytest.raises(NotFound, match="name 'nope'"):
                await load_saved_rule(conn, "nope")
            with pytest.raises(NotFound, match="id 999999"):
                await load_saved_rule(conn, 999_999)
            # passes the table's CHECKs, not validate_rule (an absence rule must use count)
            await conn.execute(
                "INSERT INTO alert_rules (name, metric_type, condition, threshold,"
                " no_data_seconds) VALUES ('broken', 'log_count', '<', 1, 60)"
            )
            with pytest.raises(Conflict, match="aggregation"):
                await load_saved_rule(conn, "broken")

    asyncio.run(go())


def plan(conn: psycopg.Connection[Any], query: LiteralString, params: tuple[Any, ...]) -> str:
    rows = conn.execute("EXPLAIN " + query, params).fetchall()
    return "\n".join(r[0] for r in rows)


def test_an_hour_of_twenty_services_reads_its_windows_through_an_index(db_url: str) -> None:
    """Its speed is measured by `rtmh bench api` (a test asserts no wall-clock bound)."""
    # six hours stored, one replayed: the query must pick its hour through an index
    with psycopg.connect(db_url, autocommit=True) as conn:
        insert_windows(conn, services=20, bursting=5, hours=6)
        end = HOUR + timedelta(hours=1)
        limit = MAX_WINDOWS + 1
        by_type = plan(conn, SQL.windows_in_range, ("error_rate", HOUR, end, limit))
        by_key = plan(conn, SQL.windows_of_key_in_range, ("s03", "error_rate", HOUR, end, limit))
    # by time (idx_metrics_agg_window_start), or a skip scan of the unique index when the keys
    # are few (PostgreSQL 18): either way not the whole table
    assert "Seq Scan" not in by_type, by_type
    assert "Index Scan using metrics_agg_window_unique" in by_key, by_key
    result = backtest(db_url)
    assert result.summary.windows_evaluated == 20 * 355
    assert result.summary.incidents == 5
