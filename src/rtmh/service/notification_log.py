"""The notifications log: every notification queued, newest first, with what became of it
(db/queries/notification_log.sql). One incident's notifications, with each attempt, come with
the incident (rtmh.service.incidents)."""

from __future__ import annotations

import uuid
from typing import Any, Final, Literal, get_args

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.service.errors import Invalid
from rtmh.service.paging import MAX_ID, Page, bad_cursor, check_limit, decode_cursor, page_of
from rtmh.service.timerange import text

SQL = load("notification_log")

Status = Literal["pending", "sending", "sent", "failed", "dead", "suppressed"]
STATUSES: Final = get_args(Status)


async def list_notifications(
    conn: psycopg.AsyncConnection[Any],
    *,
    channel: str | None = None,
    statuses: list[str] | None = None,
    incident_id: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    check_limit(limit)
    for status in statuses or ():
        if status not in STATUSES:
            raise Invalid("status", f"unknown status {status!r}; use {', '.join(STATUSES)}")
    incident = None
    if incident_id is not None:
        try:
            incident = uuid.UUID(incident_id)
        except ValueError:
            raise Invalid("incident_id", "not an incident id (a UUID)") from None
    after = decode_cursor(cursor, 1)
    after_id = None
    if after is not None:
        if not isinstance(after[0], int) or not 0 < after[0] <= MAX_ID:
            raise bad_cursor()
        after_id = after[0]
    params = {
        "channel": text("channel", channel),
        "statuses": statuses or None,
        "incident_id": incident,
        "after_id": after_id,
        "limit": limit + 1,
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_notifications, params)
        rows = await cur.fetchall()
    return page_of(rows, limit, lambda row: [row["id"]])
