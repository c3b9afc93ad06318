"""The rules stage's repository: reads rules and windows, writes incidents, their timeline and the
notification outbox. Every statement the rules engine runs is here; their SQL is the named queries
of db/queries/rules.sql."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rtmh.db.queries import load
from rtmh.records import WindowKey
from rtmh.rules.model import (
    STATE_METADATA_FIELDS,
    IncidentState,
    Rule,
    RuleError,
    WindowValue,
    validate_rule,
)
from rtmh.rules.notifications import QueuedNotification
from rtmh.rules.silences import Silence

log = logging.getLogger(__name__)

SQL = load("rules")


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def listen_rules_changed(conn: psycopg.Connection) -> None:
    conn.execute(SQL.listen_rules_changed)


def load_rules(conn: psycopg.Connection) -> list[Rule]:
    rules: list[Rule] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(SQL.load_rules):
            fields = {k: v for k, v in row.items() if k not in ("created_at", "updated_at")}
            try:
                rules.append(validate_rule(fields))
            except RuleError as err:
                log.error("alert rule %r ignored: %s", row.get("name"), err)
    return rules


def window_from_row(row: Sequence[Any]) -> WindowValue:
    """A metrics_agg row selected as (window_key, metric_type, start, end (epoch seconds), value,
    count, sum, min, max, p50, p95, p99)."""
    k, t, ws, we, value, count, total, lo, hi, p50, p95, p99 = row
    return WindowValue(
        window_key=k,
        metric_type=t,
        window_start=ws,
        window_end=we,
        value=value,
        count=int(count),
        sum=float(total),
        min=lo,
        max=hi,
        p50=p50,
        p95=p95,
        p99=p99,
    )


def relax_commit(conn: psycopg.Connection) -> None:
    """The current transaction commits without waiting for the WAL flush (see rules.sql)."""
    conn.execute(SQL.relax_commit)


def load_windows(conn: psycopg.Connection, keys: Iterable[WindowKey]) -> list[WindowValue]:
    ks, ts, ss = [], [], []
    for k, t, s in keys:
        ks.append(k)
        ts.append(t)
        ss.append(s)
    if not ks:
        return []
    return [
        window_from_row(r) for r in conn.execute(SQL.load_windows_by_key, (ks, ts, ss)).fetchall()
    ]


def load_current_windows(
    conn: psycopg.Connection, window_key: str, metric_type: str, now: float, size: int
) -> list[WindowValue]:
    rows = conn.execute(SQL.load_current_windows, (window_key, metric_type, now, size, now))
    return [window_from_row(r) for r in rows.fetchall()]


def last_data_by_key(conn: psycopg.Connection, metric_type: str, slide: int) -> dict[str, float]:
    rows = conn.execute(SQL.last_data_by_key, (slide, metric_type)).fetchall()
    return {k: float(t) for k, t in rows}


def active_fingerprints(conn: psycopg.Connection, reopen_seconds: float) -> set[str]:
    return {r[0] for r in conn.execute(SQL.active_fingerprints, (reopen_seconds,)).fetchall()}


def live_incident_keys(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return [(int(r), str(k)) for r, k in conn.execute(SQL.live_incidents).fetchall()]


def active_silences(conn: psycopg.Connection) -> list[Silence]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [Silence.from_row(row) for row in cur.execute(SQL.active_silences)]


def lock_latest_incident(
    conn: psycopg.Connection, fingerprint: str
) -> tuple[IncidentState | None, dict[str, Any] | None]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(SQL.latest_incident_for_update, (fingerprint,)).fetchone()
    if row is None:
        return None, None
    return state_from_row(row), row


def state_from_row(row: Mapping[str, Any]) -> IncidentState:
    saved: Mapping[str, Any] = (row.get("metadata") or {}).get("eval") or {}
    return IncidentState(
        id=row["id"],
        status=row["status"],
        fingerprint=row["fingerprint"],
        rule_id=row["rule_id"] or 0,
        window_key=row["window_key"] or "",
        first_seen=row["first_seen"].timestamp(),
        last_seen=row["last_seen"].timestamp(),
        peak_value=row["peak_value"],
        last_value=row["last_value"],
        trigger_count=row["trigger_count"],
        resolved_at=_epoch(row["resolved_at"]),
        closed_at=_epoch(row["closed_at"]),
        **{k: saved[k] for k in STATE_METADATA_FIELDS if k in saved},
    )


def _eval_metadata(state: IncidentState) -> dict[str, Any]:
    return {"eval": {k: getattr(state, k) for k in STATE_METADATA_FIELDS}}


def insert_incident(
    conn: psycopg.Connection,
    rule: Rule,
    state: IncidentState,
    title: str,
    metadata: dict[str, Any],
) -> str:
    row = conn.execute(
        SQL.insert_incident,
        {
            "title": title,
            "description": rule.description,
            "severity": rule.severity,
            "status": state.status,
            "source": rule.source,
            "rule_id": rule.id or None,
            "window_key": state.window_key,
            "fingerprint": state.fingerprint,
            "last_value": state.last_value,
            "peak_value": state.peak_value,
            "threshold": rule.threshold,
            "trigger_count": state.trigger_count,
            "first_seen": _ts(state.first_seen),
            "last_seen": _ts(state.last_seen),
            "metadata": Jsonb({**metadata, **_eval_metadata(state)}),
        },
    ).fetchone()
    assert row is not None
    return str(row[0])


def update_incident(conn: psycopg.Connection, state: IncidentState) -> None:
    conn.execute(SQL.update_incident, update_params(state))


def update_params(state: IncidentState) -> dict[str, Any]:
    """update_incident's parameters (the API's async writer uses them too)."""
    return {
        "id": state.id,
        "severity": state.notified_severity,
        "status": state.status,
        "last_value": state.last_value,
        "peak_value": state.peak_value,
        "trigger_count": state.trigger_count,
        "last_seen": _ts(state.last_seen),
        "resolved_at": _ts(state.resolved_at),
        "closed_at": _ts(state.closed_at),
        "metadata": Jsonb(_eval_metadata(state)),
    }


def insert_timeline(
    conn: psycopg.Connection,
    incident_id: str,
    event_type: str,
    from_status: str | None,
    to_status: str | None,
    value: float | None,
    details: Mapping[str, Any],
    actor: str,
) -> None:
    conn.execute(
        SQL.insert_timeline,
        timeline_params(incident_id, event_type, from_status, to_status, value, details, actor),
    )


def insert_notification(
    conn: psycopg.Connection, incident_id: str, row: QueuedNotification
) -> None:
    conn.execute(SQL.insert_notification, notification_params(incident_id, row))


def notification_params(incident_id: str, row: QueuedNotification) -> tuple[Any, ...]:
    """insert_notification's parameters (the API's async writer uses them too)."""
    return (
        incident_id,
        row.channel,
        row.event,
        row.idempotency_key,
        row.status,
        Jsonb(row.payload),
        row.suppressed_by,
    )


def timeline_params(
    incident_id: str,
    event_type: str,
    from_status: str | None,
    to_status: str | None,
    value: float | None,
    details: Mapping[str, Any],
    actor: str,
) -> tuple[Any, ...]:
    """insert_timeline's parameters."""
    return (incident_id, event_type, from_status, to_status, value, Jsonb(dict(details)), actor)


def correlation(
    conn: psycopg.Connection, service: str, events_topics: Sequence[str]
) -> dict[str, Any]:
    """What an on-call engineer asks first: recent errors, and what changed just before."""
    errors = [
        {"at": t.isoformat(), "msg": msg or message, "host": host}
        for t, msg, message, host in conn.execute(SQL.recent_errors, (service,)).fetchall()
    ]
    found = conn.execute(SQL.recent_changes, (service, list(events_topics))).fetchall()
    changes = [
        {"at": t.isoformat(), "type": kind, "payload": payload} for t, kind, payload in found
    ]
    return {"recent_errors": errors, "recent_changes": changes}
