"""The live terminal view of `rtmh up`: what the hub holds in PostgreSQL, the source of truth,
refreshed about once a second. Without a TTY it prints timestamped lines instead."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from rtmh.db.queries import load
from rtmh.records import LIVE_STATUSES, value_vs_threshold

SEVERITY_STYLE = {
    "critical": "bold white on red",
    "high": "bold red",
    "medium": "yellow",
    "low": "cyan",
}
STATUS_STYLE = {
    "sent": "green",
    "pending": "yellow",
    "sending": "yellow",
    "failed": "red",
    "dead": "bold red",
    "suppressed": "dim",
}

SQL = load("up")


@dataclass(frozen=True, slots=True)
class IncidentLine:
    id: str
    severity: str
    service: str
    rule: str
    value: float | None
    threshold: float | None
    condition: str
    first_seen: datetime
    status: str
    source: str


@dataclass(frozen=True, slots=True)
class NotificationLine:
    id: int
    at: datetime
    channel: str
    event: str
    status: str
    attempts: int
    title: str
    error: str


@dataclass
class Snapshot:
    at: float
    committed: int
    dead_letters: int
    incidents: list[IncidentLine] = field(default_factory=list)
    notifications: list[NotificationLine] = field(default_factory=list)
    rate_in: float = 0.0
    rate_written: float = 0.0
    lag: int | None = None
    #: sum of the topics' high watermarks (the embedded broker under-reports it); with the
    #: embedded broker, the sum of its logs' ends as its gate saw them acknowledged
    high: int | None = None
    #: messages the embedded broker acknowledged since `up` started (across log rolls)
    acknowledged: int | None = None
    broker: BrokerLine | None = None


@dataclass(frozen=True, slots=True)
class BrokerLine:
    """The embedded broker's cost and its log, for the view."""

    rss: int
    cpu_percent: float | None
    max_batches: int
    log_bytes: int
    rolls: int


def derive_rates(before: Snapshot | None, after: Snapshot) -> None:
    """Rates from two snapshots a second apart; lag from the broker's high watermarks."""
    after.lag = None if after.high is None else max(0, after.high - after.committed)
    if before is None:
        return
    dt = max(after.at - before.at, 1e-3)
    # a log roll moves the committed offsets back to 0: that second shows no rate
    after.rate_written = max(0.0, (after.committed - before.committed) / dt)
    if after.acknowledged is not None and before.acknowledged is not None:
        after.rate_in = max(0.0, (after.acknowledged - before.acknowledged) / dt)
    elif after.high is not None and before.high is not None:
        after.rate_in = max(0.0, (after.high - before.high) / dt)


def read_snapshot(conn: psycopg.Connection, group_id: str) -> Snapshot:
    committed = conn.execute(SQL.committed_offsets, (group_id,)).fetchone()
    dead = conn.execute(SQL.count_dead_letters).fetchone()
    snap = Snapshot(time.time(), int(committed[0]) if committed else 0, int(dead[0]) if dead else 0)
    for row in conn.execute(SQL.recent_incidents).fetchall():
        snap.incidents.append(IncidentLine(*row[:10]))
    for row in conn.execute(SQL.recent_notifications).fetchall():
        snap.notifications.append(NotificationLine(*row))
    return snap


def _age(since: datetime, now: float) -> str:
    seconds = max(0, int(now - since.timestamp()))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def render(snap: Snapshot, headline: str) -> Group:
    stats = Table.grid(padding=(0, 3))
    for _ in range(4):
        stats.add_column()
    lag = "-" if snap.lag is None else f"{snap.lag:,}"
    stats.add_row(
        f"[bold]in[/] {snap.rate_in:,.0f}/s",
        f"[bold]written[/] {snap.rate_written:,.0f}/s",
        f"[bold]dead letters[/] {snap.dead_letters:,}",
        f"[bold]lag[/] {lag}",
    )
    if snap.broker is not None:
        stats.add_row(*broker_cells(snap.broker))
    incidents = Table(expand=True, title="incidents", title_justify="left")
    for column in ("severity", "service", "rule", "value vs threshold", "age", "status"):
        incidents.add_column(column)
    for inc in snap.incidents:
        live = inc.status in ("open", "investigating")
        incidents.add_row(
            Text(inc.severity, style=SEVERITY_STYLE.get(inc.severity, "") if live else "dim"),
            inc.service,
            inc.rule,
            value_vs_threshold(_num(inc.value), inc.condition, _num(inc.threshold), live=live),
            _age(inc.first_seen, snap.at),
            Text(inc.status, style="bold" if live else "green"),
        )
    if not snap.incidents:
        incidents.add_row("-", "no incidents", "", "", "", "")
    notes = Table(expand=True, title="notifications", title_justify="left")
    for column in ("when", "channel", "event", "incident", "status", "attempts"):
        notes.add_column(column)
    for n in snap.notifications:
        notes.add_row(
            n.at.astimezone().strftime("%H:%M:%S"),
            n.channel,
            n.event,
            n.title,
            Text(n.status, style=STATUS_STYLE.get(n.status, "")),
            str(n.attempts),
        )
    if not snap.notifications:
        notes.add_row("-", "none yet", "", "", "", "")
    return Group(Panel(stats, title=headline, title_align="left"), incidents, notes)


def _cpu(b: BrokerLine) -> str:
    return "-" if b.cpu_percent is None else f"{b.cpu_percent:.0f} %"


def broker_cells(b: BrokerLine) -> tuple[str, str, str, str]:
    return (
        f"[bold]broker[/] {b.rss / 2**20:.0f} MB",
        f"[bold]cpu[/] {_cpu(b)}",
        f"[bold]log[/] {b.log_bytes / 2**20:.1f} MiB, {b.max_batches:,} batches",
        f"[bold]rolls[/] {b.rolls:,}",
    )


def changes(before: Snapshot | None, after: Snapshot) -> list[str]:
    """Plain lines for what changed, for logs and non-TTY output."""
    lines: list[str] = []
    old_inc = {i.id: i.status for i in before.incidents} if before else {}
    for inc in after.incidents:
        if old_inc.get(inc.id) != inc.status:
            live = inc.status in LIVE_STATUSES
            value = value_vs_threshold(
                _num(inc.value), inc.condition, _num(inc.threshold), live=live
            )
            lines.append(
                f"incident {inc.status}: {inc.rule} on {inc.service} [{inc.severity}] "
                f"{'value ' if live else ''}{value} ({inc.source})"
            )
    old_notes = {(n.id, n.status) for n in before.notifications} if before else set()
    for n in reversed(after.notifications):
        if (n.id, n.status) not in old_notes and n.status != "pending":
            suffix = f": {n.error}" if n.error and n.status != "sent" else ""
            lines.append(
                f"notification {n.status}: {n.event} '{n.title}' via {n.channel} "
                f"(attempt {n.attempts}){suffix}"
            )
    return lines


def summary(snap: Snapshot) -> str:
    lag = "-" if snap.lag is None else f"{snap.lag:,}"
    live = sum(1 for i in snap.incidents if i.status in ("open", "investigating"))
    line = (
        f"in {snap.rate_in:,.0f}/s, written {snap.rate_written:,.0f}/s, "
        f"dead letters {snap.dead_letters:,}, lag {lag}, open incidents {live}"
    )
    if snap.broker is not None:
        b = snap.broker
        line += (
            f"; broker {b.rss / 2**20:.0f} MB, cpu {_cpu(b)}, log {b.log_bytes / 2**20:.1f} MiB "
            f"in at most {b.max_batches:,} batches a partition, {b.rolls:,} rolls"
        )
    return line


def stamp(line: str) -> str:
    return f"{datetime.now(UTC).astimezone().strftime('%Y-%m-%d %H:%M:%S')} {line}"
