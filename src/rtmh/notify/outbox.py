"""The notifier's repository: every statement it runs against ``alert_notifications`` and friends
(their SQL: the named queries of db/queries/notify.sql).

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
from typing import Any, Final, LiteralString

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.notify.channels import EXCERPT_CHARS
from rtmh.rules.silences import Silence

SQL = load("notify")
#: the one silences query, shared with the rules stage
ACTIVE_SILENCES: Final = load("rules").active_silences

REAPED_ERROR: Final = (
    "the notifier making the last allowed attempt stopped before recording its outcome "
    "(lease expired); not retried beyond max_attempts"
)


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
        SQL.claim_due,
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
    sql: LiteralString,
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
        SQL.record_sent,
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
        SQL.record_failed,
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
        SQL.record_dead,
        row,
        notifier,
        error=db_text(error),
        http_status=http_status,
        response_body=db_text(response_body, EXCERPT_CHARS),
    )


async def record_suppressed(
    conn: psycopg.AsyncConnection[Any], row: ClaimedRow, notifier: str, silence_id: int
) -> bool:
    return await _guarded(conn, SQL.record_suppressed, row, notifier, silence=silence_id)


async def release_claimed(
    conn: psycopg.AsyncConnection[Any], notifier: str, ids: Sequence[int]
) -> list[int]:
    if not ids:
        return []
    cur = await conn.execute(SQL.release_claimed, {"ids": list(ids), "notifier": notifier})
    return [row[0] for row in await cur.fetchall()]


async def reap_exhausted(conn: psycopg.AsyncConnection[Any]) -> list[tuple[int, str]]:
    """(id, channel) of each row made dead."""
    cur = await conn.execute(SQL.reap_exhausted, {"error": REAPED_ERROR})
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def seconds_until_next_due(conn: psycopg.AsyncConnection[Any]) -> float | None:
    cur = await conn.execute(SQL.seconds_until_next_due)
    row = await cur.fetchone()
    return None if row is None or row[0] is None else float(row[0])


async def load_channels(conn: psycopg.AsyncConnection[Any]) -> dict[str, ChannelRow]:
    cur = await conn.execute(SQL.load_channels)
    return {row[0]: ChannelRow(*row) for row in await cur.fetchall()}


async def load_silences(conn: psycopg.AsyncConnection[Any]) -> list[Silence]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(ACTIVE_SILENCES)
        return [Silence.from_row(row) for row in await cur.fetchall()]


async def listen(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(SQL.listen)


# --- `rtmh notify test` (synchronous) ------------------------------------------------------------


def load_channel(conn: psycopg.Connection[Any], name: str) -> ChannelRow | None:
    row = conn.execute(SQL.load_channel, (name,)).fetchone()
    return None if row is None else ChannelRow(*row)


def channel_names(conn: psycopg.Connection[Any]) -> list[str]:
    return [row[0] for row in conn.execute(SQL.channel_names).fetchall()]


def schema_ready(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(SQL.schema_ready).fetchone()
    return bool(row and row[0])
