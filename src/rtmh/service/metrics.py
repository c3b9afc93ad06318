"""Windows for people: one key's series over a time range (a chart) and the newest value of every
window key (a services overview). Read-only views of metrics_agg (db/queries/metrics_api.sql).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.service.errors import Invalid
from rtmh.service.timerange import TimeRange, text, time_range

SQL = load("metrics_api")

DEFAULT_RANGE: Final = timedelta(hours=1)
#: the table keeps 7 days (RTMH_RETENTION_DAYS); a longer chart would be empty at its start
LONGEST_RANGE: Final = timedelta(days=7)
#: windows in one series: 7 days of 60-s slides is 10,080
MAX_POINTS: Final = 20_000
DEFAULT_POINTS: Final = 10_080
#: the overview looks this far back at most
MAX_SINCE_MINUTES: Final = 24 * 60
#: the latency series of the services table: the p95 of this metric (what `rtmh simulate` and
#: the OpenTelemetry HTTP semantic conventions' services report, in ms)
DEFAULT_LATENCY_METRIC: Final = "http_request_duration_ms"
#: services in one answer of the services table (the window-key budget keeps it near this)
MAX_SERVICE_KEYS: Final = 500


async def series(
    conn: psycopg.AsyncConnection[Any],
    window_key: str,
    metric_type: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = DEFAULT_POINTS,
) -> dict[str, Any]:
    """The windows of one key and type starting in [since, until), oldest first.

    ``truncated`` says the range held more than ``limit`` windows (the first ``limit`` are
    returned): narrow the range to see the rest. ``points`` is the JSON array as PostgreSQL
    built it (a ``msgspec.Raw``), ready to be sent."""
    if not 1 <= limit <= MAX_POINTS:
        raise Invalid("limit", f"must be between 1 and {MAX_POINTS}, got {limit}")
    span: TimeRange = time_range(since, until, default=DEFAULT_RANGE, longest=LONGEST_RANGE)
    params = {
        "window_key": text("window_key", window_key),
        "metric_type": text("metric_type", metric_type),
        "since": span.since,
        "until": span.until,
        "limit": limit + 1,
    }
    cur = await conn.execute(SQL.series, params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate always answers one row
    return {
        "window_key": window_key,
        "metric_type": metric_type,
        "since": span.since,
        "until": span.until,
        # encoded by PostgreSQL; the API passes it through as it is (msgspec.Raw)
        "points": msgspec.Raw(row[0].encode()),
        "truncated": bool(row[1]),
    }


async def latest(
    conn: psycopg.AsyncConnection[Any], since_minutes: int = 30
) -> list[dict[str, Any]]:
    """Every window key with a window in the last ``since_minutes`` minutes, by name: the
    newest window's value of each of its metric types, and when its newest window started."""
    if not 1 <= since_minutes <= MAX_SINCE_MINUTES:
        raise Invalid(
            "since_minutes", f"must be between 1 and {MAX_SINCE_MINUTES}, got {since_minutes}"
        )
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.latest, {"since_minutes": since_minutes})
        rows = await cur.fetchall()
    keys: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = row.pop("window_key")
        entry = keys.setdefault(
            key, {"window_key": key, "latest_window_start": row["window_start"], "metrics": {}}
        )
        entry["latest_window_start"] = max(entry["latest_window_start"], row["window_start"])
        entry["metrics"][row.pop("metric_type")] = row
    return [keys[key] for key in sorted(keys)]


async def services(
    conn: psycopg.AsyncConnection[Any],
    since_minutes: int = 30,
    latency_metric: str = DEFAULT_LATENCY_METRIC,
) -> dict[str, Any]:
    """The dashboard's services table: per window key, events per second, error rate and p95
    latency over the last ``since_minutes`` minutes, as ``[window_start, value]`` pairs oldest
    first. ``services`` is JSON as PostgreSQL built it (a ``msgspec.Raw``)."""
    if not 1 <= since_minutes <= MAX_SINCE_MINUTES:
        raise Invalid(
            "since_minutes", f"must be between 1 and {MAX_SINCE_MINUTES}, got {since_minutes}"
        )
    span = time_range(None, None, default=timedelta(minutes=since_minutes), longest=LONGEST_RANGE)
    params = {
        "since": span.since,
        "until": span.until,
        "latency_metric": text("latency_metric", latency_metric),
        "max_keys": MAX_SERVICE_KEYS,
    }
    cur = await conn.execute(SQL.services, params)
    row = await cur.fetchone()
    assert row is not None  # an aggregate always answers one row
    return {
        "since": span.since,
        "until": span.until,
        "latency_metric": latency_metric,
        "services": msgspec.Raw(row[0].encode()),
    }
