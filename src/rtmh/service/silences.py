"""Silences for people: create, list (active, pending, expired), expire.

Matchers are checked by :func:`rtmh.rules.silences.validate_matchers`, the module that decides
at notification time whether a silence mutes something, so what is accepted here is what mutes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rtmh.db.queries import load
from rtmh.rules.silences import validate_matchers
from rtmh.service.errors import Invalid, NotFound

SQL = load("silences")

State = Literal["pending", "active", "expired"]
MAX_SECONDS: Final = 366 * 86400


def state_of(row: dict[str, Any], now: datetime) -> State:
    if row["ends_at"] <= now:
        return "expired"
    return "pending" if row["starts_at"] > now else "active"


def _with_state(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {**row, "state": state_of(row, now)}


def check_period(
    starts_at: datetime | None,
    ends_at: datetime | None,
    duration_seconds: float | None,
    now: datetime,
) -> tuple[datetime, datetime]:
    start = starts_at or now
    if start.tzinfo is None:
        raise Invalid("starts_at", "give a time zone (e.g. 2026-12-01T12:00:00Z)")
    if (ends_at is None) == (duration_seconds is None):
        raise Invalid("ends_at", "give either ends_at or duration_seconds")
    end = ends_at if ends_at is not None else start + timedelta(seconds=duration_seconds or 0)
    if end.tzinfo is None:
        raise Invalid("ends_at", "give a time zone (e.g. 2026-12-01T14:00:00Z)")
    if end <= start:
        raise Invalid("ends_at", "must be after starts_at")
    if end <= now:
        raise Invalid("ends_at", "is in the past: the silence would never mute anything")
    if (end - start).total_seconds() > MAX_SECONDS:
        raise Invalid("ends_at", "a silence lasts at most 366 days; disable the rule instead")
    return start, end


def check_matchers(matchers: dict[str, Any]) -> dict[str, str]:
    given = {k: v for k, v in matchers.items() if v is not None}
    try:
        checked = validate_matchers(given)
    except ValueError as err:
        field, _, problem = str(err).partition(": ")
        if not problem:
            raise Invalid("matchers", str(err)) from None
        raise Invalid(field, problem) from None
    return checked


async def create_silence(
    conn: psycopg.AsyncConnection[Any],
    matchers: dict[str, Any],
    *,
    starts_at: datetime | None,
    ends_at: datetime | None,
    duration_seconds: float | None,
    comment: str,
    created_by: str,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    checked = check_matchers(matchers)
    start, end = check_period(starts_at, ends_at, duration_seconds, now)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.insert_silence, (Jsonb(checked), start, end, comment, created_by))
        row = await cur.fetchone()
    assert row is not None
    return _with_state(row, now)


async def list_silences(
    conn: psycopg.AsyncConnection[Any], state: State | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_silences, {"state": state, "limit": limit})
        return [_with_state(row, now) for row in await cur.fetchall()]


async def get_silence(conn: psycopg.AsyncConnection[Any], silence_id: int) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.get_silence, (silence_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no silence {silence_id}")
    return _with_state(row, datetime.now(UTC))


async def expire_silence(conn: psycopg.AsyncConnection[Any], silence_id: int) -> dict[str, Any]:
    """Ends it now. Expiring an expired silence changes nothing and is not an error."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.expire_silence, (silence_id,))
        row = await cur.fetchone()
    if row is None:
        return await get_silence(conn, silence_id)
    return _with_state(row, datetime.now(UTC))
