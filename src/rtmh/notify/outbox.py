"""The notifier's repository: every statement it runs against ``alert_notifications`` and friends.

Row life cycle (see the schema): the rules engine inserts ``pending`` (or ``suppressed``) rows;
a notifier claims due rows (``sending``, ``attempts + 1``, a lease in ``claimed_until``), sends,
and records ``sent``, ``failed`` (with ``next_attempt_at``) or ``dead``. A notifier that dies
mid-send leaves a ``sending`` row whose lease expires; the next claim takes it again with the
same idempotency key (at-least-once). ``claimed_by`` keeps the notifier that made the last
attempt, for the record; ``claimed_until`` is only meaningful while ``sending``.

Every write that records an outcome is guarded by ``status = 'sending' AND claimed_by = <me>
AND attempts = <the attempt I made>``: a notifier whose lease expired and was taken over cannot
overwrite the newer attempt's result (the functions then return False). Each is one statement
(the timeline row is written by a data-modifying CTE), so it is atomic on an autocommit
connection shared by many concurrent deliveries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import psycopg

from rtmh.notify.channels import EXCERPT_CHARS
from rtmh.notify.silences import Silence

#: details of the incident_events 'notified' row, written for final outcomes (sent, dead)
_TIMELINE: Final = """,
timeline AS (
    INSERT INTO incident_events (incident_id, event_type, details, actor)
    SELECT incident_id, 'notified',
           jsonb_strip_nulls(jsonb_build_object(
               'notification_id', id, 'channel', channel, 'event', event,
               'attempts', attempts, 'status', status, 'http_status', http_status,
               'error', last_error, 'notifier', claimed_by)),
           'rtmh'
    FROM done
    WHERE incident_id IS NOT NULL
)
SELECT id, channel FROM done
"""

_DONE_COLUMNS: Final = (
    "id, incident_id, channel, event, attempts, status, http_status, last_error, claimed_by"
)

_GUARD: Final = """id = %(id)s AND status = 'sending' AND claimed_by = %(notifier)s
      AND attempts = %(attempts)s"""

#: Claims up to %(limit)s due rows in one statement. Due: pending/failed rows whose time has
#: come, and sending rows whose lease expired (their notifier died or hung) unless that was
#: already the one extra attempt beyond max_attempts (those are reaped, see REAP_EXHAUSTED).
#: The lease is per channel (%(channels)s / %(leases)s, seconds), %(default_lease)s otherwise.
CLAIM_DUE: Final = """
UPDATE alert_notifications AS n
SET status = 'sending',
    claimed_by = %(notifier)s,
    claimed_until = now() + make_interval(secs => coalesce(
        (SELECT l.seconds
         FROM unnest(%(channels)s::text[], %(leases)s::float8[]) AS l(name, seconds)
         WHERE l.name = n.channel),
        %(default_lease)s::float8)),
    attempts = n.attempts + 1
WHERE n.id IN (
    SELECT id FROM alert_notifications
    WHERE (status IN ('pending', 'failed') AND next_attempt_at <= now())
       OR (status = 'sending' AND claimed_until < now() AND attempts <= max_attempts)
    ORDER BY next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
RETURNING n.id, n.incident_id::text, n.channel, n.event, n.idempotency_key, n.attempts,
          n.max_attempts, n.payload, n.created_at
"""

RECORD_SENT: Final = f"""
WITH done AS (
    UPDATE alert_notifications
    SET status = 'sent', sent_at = now(), http_status = %(http_status)s,
        response_body = %(response_body)s, last_error = NULL, claimed_until = NULL
    WHERE {_GUARD}
    RETURNING {_DONE_COLUMNS}
){_TIMELINE}"""

RECORD_DEAD: Final = f"""
WITH done AS (
    UPDATE alert_notifications
    SET status = 'dead', http_status = %(http_status)s, response_body = %(response_body)s,
        last_error = %(error)s, claimed_until = NULL
    WHERE {_GUARD}
    RETURNING {_DONE_COLUMNS}
){_TIMELINE}"""

RECORD_FAILED: Final = f"""
UPDATE alert_notifications
SET status = 'failed', next_attempt_at = now() + make_interval(secs => %(delay)s::float8),
    http_status = %(http_status)s, response_body = %(response_body)s, last_error = %(error)s,
    claimed_until = NULL
WHERE {_GUARD}
RETURNING id
"""

#: A silence created after the row was queued: nothing was sent, so the attempt is given back.
RECORD_SUPPRESSED: Final = f"""
UPDATE alert_notifications
SET status = 'suppressed', suppressed_by = %(silence)s, attempts = attempts - 1,
    claimed_by = NULL, claimed_until = NULL
WHERE {_GUARD}
RETURNING id
"""

#: On stop, rows whose attempt was cancelled go back to pending at once (the attempt stays
#: counted: it may have reached the receiver, which deduplicates on the idempotency key).
RELEASE_CLAIMED: Final = """
UPDATE alert_notifications
SET status = 'pending', claimed_until = NULL, next_attempt_at = now(),
    last_error = 'the notifier stopped during this attempt; it is retried'
WHERE id = ANY(%(ids)s) AND status = 'sending' AND claimed_by = %(notifier)s
RETURNING id
"""

REAPED_ERROR: Final = (
    "the notifier making the last allowed attempt stopped before recording its outcome "
    "(lease expired); not retried beyond max_attempts"
)

#: Expired leases of an attempt already beyond max_attempts (a notifier died during the extra
#: recovery attempt): dead, so a notification that kills its notifier cannot loop forever.
REAP_EXHAUSTED: Final = f"""
WITH done AS (
    UPDATE alert_notifications
    SET status = 'dead', claimed_until = NULL, last_error = %(error)s
    WHERE status = 'sending' AND claimed_until < now() AND attempts > max_attempts
    RETURNING {_DONE_COLUMNS}
){_TIMELINE}"""

#: Seconds until the earliest pending/failed row is due (negative: overdue; NULL: none).
NEXT_DUE: Final = """
SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
FROM alert_notifications
WHERE status IN ('pending', 'failed')
"""

LOAD_CHANNELS: Final = """
SELECT name, type, config, secrets, enabled FROM notification_channels ORDER BY name
"""

ACTIVE_SILENCES: Final = """
SELECT id, starts_at, ends_at, matchers FROM silences WHERE starts_at <= now() AND ends_at > now()
"""

LISTEN: Final = "LISTEN rtmh_notifications"


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One claimed ``alert_notifications`` row; ``attempts`` counts the attempt being made."""

    id: int
    incident_id: str | None
    channel: str
    event: str
    idempotency_key: str
    attempts: int
    max_attempts: int
    payload: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChannelRow:
    """A ``notification_channels`` row as stored (secrets included: never log it)."""

    name: str
    type: str
    config: Mapping[str, Any]
    secrets: Mapping[str, Any]
    enabled: bool

    def __repr__(self) -> str:
        return f"ChannelRow(name={self.name!r}, type={self.type!r}, enabled={self.enabled})"

    def as_mapping(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "config": self.config,
            "secrets": self.secrets,
        }


def db_text(text: str | None, limit: int | None = None) -> str | None:
    """PostgreSQL text cannot hold NUL; a receiver's body may. Cut to ``limit`` characters."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "\ufffd")
    return cleaned if limit is None else cleaned[:limit]


async def claim_due(
    conn: psycopg.AsyncConnection[Any],
    notifier: str,
    limit: int,
    leases: Mapping[str, float],
    default_lease: float,
) -> list[ClaimedRow]:
    names = list(leases)
    cur = await conn.execute(
        CLAIM_DUE,
        {
            "notifier": notifier,
            "limit": limit,
            "channels": names,
            "leases": [float(leases[name]) for name in names],
            "default_lease": float(default_lease),
        },
    )
    return [ClaimedRow(*row) for row in await cur.fetchall()]


async def _guarded(
    conn: psycopg.AsyncConnection[Any],
    sql: str,
    row: ClaimedRow,
    notifier: str,
    **params: Any,
) -> bool:
    cur = await conn.execute(
        sql, {"id": row.id, "notifier": notifier, "attempts": row.attempts, **params}
    )
    return bool(await cur.fetchall())


async def record_sent(
    conn: psycopg.AsyncConnection[Any],
    row: ClaimedRow,
    notifier: str,
    http_status: int | None,
    response_body: str,
) -> bool:
    return await _guarded(
        conn,
        RECORD_SENT,
        row,
        notifier,
        http_status=http_status,
        response_body=db_text(response_body, EXCERPT_CHARS),
    )


async def record_failed(
    conn: psycopg.AsyncConnection[Any],
    row: ClaimedRow,
    notifier: str,
    *,
    delay: float,
    error: str,
    http_status: int | None,
    response_body: str | None,
) -> bool:
    return await _guarded(
        conn,
        RECORD_FAILED,
        row,
        notifier,
        delay=delay,
        error=db_text(error),
        http_status=http_status,
        response_body=db_text(response_body, EXCERPT_CHARS),
    )


async def record_dead(
    conn: psycopg.AsyncConnection[Any],
    row: ClaimedRow,
    notifier: str,
    *,
    error: str,
    http_status: int | None = None,
    response_body: str | None = None,
) -> bool:
    return await _guarded(
        conn,
        RECORD_DEAD,
        row,
        notifier,
        error=db_text(error),
        http_status=http_status,
        response_body=db_text(response_body, EXCERPT_CHARS),
    )


async def record_suppressed(
    conn: psycopg.AsyncConnection[Any], row: ClaimedRow, notifier: str, silence_id: int
) -> bool:
    return await _guarded(conn, RECORD_SUPPRESSED, row, notifier, silence=silence_id)


async def release_claimed(
    conn: psycopg.AsyncConnection[Any], notifier: str, ids: Sequence[int]
) -> list[int]:
    if not ids:
        return []
    cur = await conn.execute(RELEASE_CLAIMED, {"ids": list(ids), "notifier": notifier})
    return [row[0] for row in await cur.fetchall()]


async def reap_exhausted(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, str]]:
    """(id, channel) of each row made dead."""
    cur = await conn.execute(REAP_EXHAUSTED, {"error": REAPED_ERROR})
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def seconds_until_next_due(conn: psycopg.AsyncConnection[Any]) -> float | None:
    cur = await conn.execute(NEXT_DUE)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def load_channels(conn: psycopg.AsyncConnection[Any]) -> dict[str, ChannelRow]:
    cur = await conn.execute(LOAD_CHANNELS)
    return {row[0]: ChannelRow(*row) for row in await cur.fetchall()}


async def load_silences(conn: psycopg.AsyncConnection[Any]) -> list[Silence]:
    cur = await conn.execute(ACTIVE_SILENCES)
    return [
        Silence(id=int(sid), starts_at=starts, ends_at=ends, matchers=dict(matchers or {}))
        for sid, starts, ends, matchers in await cur.fetchall()
    ]


async def listen(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(LISTEN)


# --- `rtmh notify test` (synchronous) ------------------------------------------------------------

LOAD_CHANNEL: Final = """
SELECT name, type, config, secrets, enabled FROM notification_channels WHERE name = %s
"""

CHANNEL_NAMES: Final = "SELECT name FROM notification_channels ORDER BY name"

#: the notifier's tables exist (migrations applied)
SCHEMA_READY: Final = "SELECT to_regclass('alert_notifications') IS NOT NULL"


def load_channel(conn: psycopg.Connection[Any], name: str) -> ChannelRow | None:
    row = conn.execute(LOAD_CHANNEL, (name,)).fetchone()
    return None if row is None else ChannelRow(*row)


def channel_names(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute(CHANNEL_NAMES).fetchall()]


def schema_ready(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(SCHEMA_READY).fetchone()
    return bool(row and row[0])
