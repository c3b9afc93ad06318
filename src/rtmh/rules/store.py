"""The rules stage's repository: reads rules and windows, writes incidents, their timeline and the
notification outbox. Every statement the rules engine runs is here."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rtmh.notify.silences import Silence
from rtmh.rules.model import (
    STATE_METADATA_FIELDS,
    IncidentState,
    Rule,
    RuleError,
    WindowValue,
    validate_rule,
)

log = logging.getLogger(__name__)

WINDOW_COLUMNS = """window_key, metric_type,
       extract(epoch FROM window_start)::float8 AS window_start,
       extract(epoch FROM window_end)::float8 AS window_end, value, count, sum, min, max,
       p50, p95, p99"""

LOAD_RULES = "SELECT * FROM alert_rules ORDER BY id"

LOAD_WINDOWS_BY_KEY = f"""
SELECT {WINDOW_COLUMNS}
FROM metrics_agg
WHERE (window_key, metric_type, window_start) IN (
    SELECT k, t, to_timestamp(s) FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(k, t, s))
"""

LOAD_CURRENT_WINDOWS = f"""
SELECT {WINDOW_COLUMNS}
FROM metrics_agg
WHERE window_key = %s AND metric_type = %s
  AND window_start > to_timestamp(%s) - make_interval(secs => %s)
  AND window_start <= to_timestamp(%s)
"""

LAST_DATA_BY_KEY = """
SELECT window_key, extract(epoch FROM max(window_start))::float8 + %s
FROM metrics_agg
WHERE metric_type = %s AND window_start > now() - interval '6 hours' AND count > 0
GROUP BY window_key
"""

INCIDENT_COLUMNS = """id::text AS id, title, severity, status, source, rule_id, window_key,
       fingerprint, last_value, peak_value, threshold, trigger_count, first_seen, last_seen,
       resolved_at, closed_at, metadata, description"""

LATEST_INCIDENT_FOR_UPDATE = f"""
SELECT {INCIDENT_COLUMNS} FROM incidents
WHERE fingerprint = %s ORDER BY created_at DESC LIMIT 1 FOR UPDATE
"""

ACTIVE_FINGERPRINTS = """
SELECT DISTINCT fingerprint FROM incidents
WHERE fingerprint IS NOT NULL
  AND (status IN ('open', 'investigating') OR resolved_at > now() - make_interval(secs => %s))
"""

LIVE_INCIDENTS = """
SELECT rule_id, window_key FROM incidents
WHERE status IN ('open', 'investigating') AND rule_id IS NOT NULL
"""

INSERT_INCIDENT = """
INSERT INTO incidents (title, description, severity, status, source, rule_id, window_key,
                       fingerprint, last_value, peak_value, threshold, trigger_count, first_seen,
                       last_seen, metadata)
VALUES (%(title)s, %(description)s, %(severity)s, %(status)s, %(source)s, %(rule_id)s,
        %(window_key)s, %(fingerprint)s, %(last_value)s, %(peak_value)s, %(threshold)s,
        %(trigger_count)s, %(first_seen)s, %(last_seen)s, %(metadata)s)
RETURNING id::text
"""

UPDATE_INCIDENT = """
UPDATE incidents
SET status = %(status)s, last_value = %(last_value)s, peak_value = %(peak_value)s,
    trigger_count = %(trigger_count)s, last_seen = %(last_seen)s, resolved_at = %(resolved_at)s,
    closed_at = %(closed_at)s, metadata = metadata || %(metadata)s
WHERE id = %(id)s
"""

INSERT_TIMELINE = """
INSERT INTO incident_events (incident_id, event_type, from_status, to_status, value, details,
                             actor)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

INSERT_NOTIFICATION = """
INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, status, payload,
                                 suppressed_by)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (idempotency_key) DO NOTHING
"""

ACTIVE_SILENCES = "SELECT * FROM silences WHERE starts_at <= now() AND ends_at > now()"

RECENT_ERRORS = """
SELECT event_time, data->>'msg' AS msg, data->>'message' AS message, host
FROM raw_events
WHERE service = %s AND level IN ('error', 'fatal') AND event_time > now() - interval '15 minutes'
ORDER BY event_time DESC LIMIT 5
"""

RECENT_CHANGES = """
SELECT event_time, data->>'type' AS type, data->'payload' AS payload
FROM raw_events
WHERE service = %s AND topic = %s AND event_time > now() - interval '15 minutes'
  AND data->>'type' IN ('deploy', 'config_change', 'restart', 'rollback', 'scale')
ORDER BY event_time DESC LIMIT 5
"""


def _ts(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def load_rules(conn: psycopg.Connection) -> list[Rule]:
    rules: list[Rule] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(LOAD_RULES):
            fields = {k: v for k, v in row.items() if k not in ("created_at", "updated_at")}
            try:
                rules.append(validate_rule(fields))
            except RuleError as err:
                log.error("alert rule %r ignored: %s", row.get("name"), err)
    return rules


def _window(row: Sequence[Any]) -> WindowValue:
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


def load_windows(
    conn: psycopg.Connection, keys: Iterable[tuple[str, str, int]]
) -> list[WindowValue]:
    ks, ts, ss = [], [], []
    for k, t, s in keys:
        ks.append(k)
        ts.append(t)
        ss.append(s)
    if not ks:
        return []
    return [_window(r) for r in conn.execute(LOAD_WINDOWS_BY_KEY, (ks, ts, ss)).fetchall()]


def load_current_windows(
    conn: psycopg.Connection, window_key: str, metric_type: str, now: float, size: int
) -> list[WindowValue]:
    rows = conn.execute(LOAD_CURRENT_WINDOWS, (window_key, metric_type, now, size, now))
    return [_window(r) for r in rows.fetchall()]


def last_data_by_key(conn: psycopg.Connection, metric_type: str, slide: int) -> dict[str, float]:
    rows = conn.execute(LAST_DATA_BY_KEY, (slide, metric_type)).fetchall()
    return {k: float(t) for k, t in rows}


def active_fingerprints(conn: psycopg.Connection, reopen_seconds: float) -> set[str]:
    return {r[0] for r in conn.execute(ACTIVE_FINGERPRINTS, (reopen_seconds,)).fetchall()}


def live_incident_keys(conn: psycopg.Connection) -> list[tuple[int, str]]:
    return [(int(r), str(k)) for r, k in conn.execute(LIVE_INCIDENTS).fetchall()]


def active_silences(conn: psycopg.Connection) -> list[Silence]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [Silence.from_row(r) for r in cur.execute(ACTIVE_SILENCES)]


def lock_latest_incident(
    conn: psycopg.Connection, fingerprint: str
) -> tuple[IncidentState | None, dict[str, Any] | None]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(LATEST_INCIDENT_FOR_UPDATE, (fingerprint,)).fetchone()
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
        INSERT_INCIDENT,
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
    conn.execute(
        UPDATE_INCIDENT,
        {
            "id": state.id,
            "status": state.status,
            "last_value": state.last_value,
            "peak_value": state.peak_value,
            "trigger_count": state.trigger_count,
            "last_seen": _ts(state.last_seen),
            "resolved_at": _ts(state.resolved_at),
            "closed_at": _ts(state.closed_at),
            "metadata": Jsonb(_eval_metadata(state)),
        },
    )


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
        INSERT_TIMELINE,
        (incident_id, event_type, from_status, to_status, value, Jsonb(dict(details)), actor),
    )


def insert_notification(
    conn: psycopg.Connection,
    incident_id: str,
    channel: str,
    event: str,
    key: str,
    payload: Mapping[str, Any],
    suppressed_by: int | None,
) -> None:
    status = "suppressed" if suppressed_by is not None else "pending"
    conn.execute(
        INSERT_NOTIFICATION,
        (incident_id, channel, event, key, status, Jsonb(dict(payload)), suppressed_by),
    )


def correlation(conn: psycopg.Connection, service: str, events_topic: str) -> dict[str, Any]:
    """What an on-call engineer asks first: recent errors, and what changed just before."""
    errors = [
        {"at": t.isoformat(), "msg": msg or message, "host": host}
        for t, msg, message, host in conn.execute(RECENT_ERRORS, (service,)).fetchall()
    ]
    changes = [
        {"at": t.isoformat(), "type": kind, "payload": payload}
        for t, kind, payload in conn.execute(RECENT_CHANGES, (service, events_topic)).fetchall()
    ]
    return {"recent_errors": errors, "recent_changes": changes}
