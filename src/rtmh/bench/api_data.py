"""The data set of `rtmh bench api`, generated inside PostgreSQL (db/queries/bench_api.sql).

``--events`` raw_events rows over the last ``SPAN`` (6 h) across ``SERVICES`` services,
``--windows`` metrics_agg rows over the same span (every key x type, one window start every
few seconds), and ``--incidents`` incidents over the last week with their timelines,
notifications and attempts. Each step is timed and shown as a progress bar; then VACUUM
ANALYZE, so the planner has statistics and autovacuum has nothing left to do while the API is
measured.

raw_events is partitioned by day on created_at, and the migrations create today's partition
and the next days' only. The 6 h before now reach into yesterday (UTC) until 06:00, so the
generator creates the partition of every earlier day the span touches, under the name and
bounds rtmh_maintain_partitions gives (raw_events_YYYYMMDD): that is what a hub running since
yesterday has, and the searches prune partitions as they do there. Nothing lands in
raw_events_default.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg import sql
from rich.console import Console

from rtmh.bench.common import progress_bar
from rtmh.db.queries import load

SQL = load("bench_api")

SPAN: Final = timedelta(hours=6)
SERVICES: Final = 50
#: the window key the worker keeps over every service
ALL_KEY: Final = "__all__"
#: 4 metric types the worker derives from logs and events, 5 metric names services send
METRIC_TYPES: Final = (
    "log_count",
    "error_count",
    "error_rate",
    "event_count",
    "http_latency_ms",
    "db_latency_ms",
    "cpu_percent",
    "memory_mb",
    "queue_depth",
)
#: the windows are 60 s long (the default RTMH_WINDOW_SIZE_S), whatever their slide
WINDOW_S: Final = 60
RULES: Final = 20
INCIDENT_DAYS: Final = 7
#: rows per INSERT: big enough to be cheap per row, small enough for the bar to move
EVENTS_CHUNK: Final = 250_000


def service_name(i: int) -> str:
    return f"svc-{i:02d}"


@dataclass
class DataSet:
    """What was generated and how long each step took."""

    events: int
    windows: int
    incidents: int
    #: when the 6-h span ends (its last event; series and searches end here or later)
    span_end: datetime
    window_step_s: float
    services: list[str] = field(default_factory=list)
    metric_types: list[str] = field(default_factory=list)
    timeline_rows: int = 0
    notifications: int = 0
    attempts: int = 0
    partitions_created: list[str] = field(default_factory=list)
    #: step -> seconds
    seconds: dict[str, float] = field(default_factory=dict)
    #: table -> bytes, indexes and TOAST included
    sizes: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "raw_events": self.events,
            "metrics_agg": self.windows,
            "incidents": self.incidents,
            "incident_events": self.timeline_rows,
            "alert_notifications": self.notifications,
            "notification_attempts": self.attempts,
            "services": len(self.services),
            "metric_types": self.metric_types,
            "span_hours": SPAN.total_seconds() / 3600,
            "span_end": self.span_end.isoformat(timespec="seconds"),
            "window_step_s": round(self.window_step_s, 3),
            "window_size_s": WINDOW_S,
            "partitions_created": self.partitions_created,
            "generation_s": {k: round(v, 2) for k, v in self.seconds.items()},
            "generation_total_s": round(sum(self.seconds.values()), 2),
            "table_mb": {k: round(v / 2**20, 1) for k, v in self.sizes.items()},
        }


def generate(url: str, events: int, windows: int, incidents: int, console: Console) -> DataSet:
    """Fill the fresh database at ``url``; every step on a bar of ``console``."""
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - SPAN
    services = [service_name(i) for i in range(SERVICES)]
    keys = [*services, ALL_KEY]
    pairs = len(keys) * len(METRIC_TYPES)
    # every key x type gets the same window starts: as many as make --windows rows (rounded
    # up to whole starts), evenly over the span
    starts = max(1, math.ceil(windows / pairs))
    step_s = SPAN.total_seconds() / starts
    data = DataSet(
        events=events,
        windows=starts * pairs,
        incidents=incidents,
        span_end=end,
        window_step_s=step_s,
        services=services,
        metric_types=list(METRIC_TYPES),
    )
    with psycopg.connect(url, autocommit=True) as conn, progress_bar(console) as bar:
        data.partitions_created = _day_partitions(conn, start, end)

        began = time.perf_counter()
        task = bar.add_task("raw_events", total=events, note="")
        events_step = SPAN.total_seconds() / events
        for lo in range(0, events, EVENTS_CHUNK):
            hi = min(events, lo + EVENTS_CHUNK)
            conn.execute(
                SQL.insert_raw_events,
                {"lo": lo, "hi": hi, "start": start, "step_s": events_step, "services": SERVICES},
            )
            elapsed = time.perf_counter() - began
            bar.update(task, completed=hi, note=f"{hi / elapsed:,.0f} rows/s")
        data.seconds["raw_events"] = time.perf_counter() - began

        began = time.perf_counter()
        task = bar.add_task("metrics_agg", total=data.windows, note="")
        chunk = max(1, EVENTS_CHUNK // pairs)
        for lo in range(0, starts, chunk):
            hi = min(starts, lo + chunk)
            conn.execute(
                SQL.insert_metrics_agg,
                {
                    "lo": lo,
                    "hi": hi,
                    "start": start,
                    "step_s": step_s,
                    "window_s": WINDOW_S,
                    "keys": keys,
                    "types": list(METRIC_TYPES),
                },
            )
            bar.update(task, completed=hi * pairs)
        data.seconds["metrics_agg"] = time.perf_counter() - began

        began = time.perf_counter()
        task = bar.add_task("incidents", total=4, note="")
        conn.execute(SQL.insert_rules, {"rules": RULES})
        conn.execute(
            SQL.insert_incidents,
            {"incidents": incidents, "days": INCIDENT_DAYS, "services": SERVICES, "rules": RULES},
        )
        bar.update(task, advance=1, note="timeline")
        data.timeline_rows = conn.execute(SQL.insert_timeline).rowcount
        bar.update(task, advance=1, note="notifications")
        data.notifications = conn.execute(SQL.insert_notifications).rowcount
        bar.update(task, advance=1, note="attempts")
        data.attempts = conn.execute(SQL.insert_attempts).rowcount
        bar.update(task, advance=1, note="")
        data.seconds["incidents"] = time.perf_counter() - began

        # VACUUM, not only ANALYZE: fresh rows have no hint bits and no visibility map, so the
        # first reads would write every page and autovacuum (insert-triggered) would start on
        # raw_events in the middle of the measurement
        began = time.perf_counter()
        task = bar.add_task("vacuum analyze", total=1, note="")
        conn.execute("VACUUM (ANALYZE)")
        bar.update(task, advance=1)
        data.seconds["vacuum_analyze"] = time.perf_counter() - began

        data.sizes = {name: int(size) for name, size in conn.execute(SQL.table_sizes)}
    return data


def incident_ids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(SQL.incident_ids)]


def _day_partitions(conn: psycopg.Connection[Any], start: datetime, end: datetime) -> list[str]:
    """Create the daily partitions of raw_events for the days in [start, end] that the
    migrations did not (the days before today); their names, for the report."""
    created: list[str] = []
    day: date = start.date()
    while day <= end.date():
        name = f"raw_events_{day:%Y%m%d}"
        begin = datetime(day.year, day.month, day.day, tzinfo=UTC)
        exists = conn.execute(SQL.relation_exists, (name,)).fetchone()
        if not (exists and exists[0]):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} PARTITION OF raw_events FOR VALUES FROM ({}) TO ({})"
                ).format(
                    sql.Identifier(name),
                    sql.Literal(begin),
                    sql.Literal(begin + timedelta(days=1)),
                )
            )
            created.append(name)
        day += timedelta(days=1)
    return created
