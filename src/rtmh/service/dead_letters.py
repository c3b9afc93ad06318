"""Dead letters for people: the list (newest first, keyset-paginated) and one dead letter with
its exact bytes, base64-encoded, and a readable preview (db/queries/dead_letters.sql).

A dead letter's payload is whatever a producer sent, often not text: the bytes travel as base64
so nothing is lost, and the preview is the first 4 KiB decoded as UTF-8 with undecodable bytes
replaced (U+FFFD), never cut inside a character.
"""

from __future__ import annotations

import base64
import codecs
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.service.errors import Invalid, NotFound
from rtmh.service.paging import MAX_ID, Page, bad_cursor, check_limit, decode_cursor, page_of
from rtmh.service.timerange import aware, text

SQL = load("dead_letters")

PREVIEW_BYTES: Final = 4096


def preview(payload: bytes | None) -> tuple[str | None, bool]:
    """The payload's first PREVIEW_BYTES as text, and whether that cut anything off."""
    if payload is None:
        return None, False
    head = payload[:PREVIEW_BYTES]
    cut = len(payload) > PREVIEW_BYTES
    # final=False when cut: a character split by the cut is dropped rather than replaced
    text = codecs.getincrementaldecoder("utf-8")(errors="replace").decode(head, final=not cut)
    return text, cut


def _b64(value: bytes | None) -> str | None:
    return None if value is None else base64.b64encode(value).decode("ascii")


async def list_dead_letters(
    conn: psycopg.AsyncConnection[Any],
    *,
    topic: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    check_limit(limit)
    params: dict[str, Any] = {
        "topic": text("topic", topic),
        "since": aware("since", since),
        "until": aware("until", until),
        "after_created": None,
        "after_id": None,
        "limit": limit + 1,
    }
    if since is not None and until is not None and since >= until:
        raise Invalid("until", "must be after since")
    after = decode_cursor(cursor, 2)
    if after is not None:
        try:
            params["after_created"] = datetime.fromisoformat(str(after[0]))
            params["after_id"] = int(after[1])
        except (TypeError, ValueError):
            params["after_created"] = None
        if params["after_created"] is None or params["after_created"].tzinfo is None:
            raise bad_cursor()
        if not 0 < params["after_id"] <= MAX_ID:
            raise bad_cursor()
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.list_dead_letters, params)
        rows = await cur.fetchall()
    return page_of(rows, limit, lambda row: [row["created_at"].isoformat(), row["id"]])


async def get_dead_letter(
    conn: psycopg.AsyncConnection[Any], dead_letter_id: int
) -> dict[str, Any]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.get_dead_letter, (dead_letter_id,))
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no dead letter {dead_letter_id}")
    key = row.pop("message_key")
    payload = row.pop("payload")
    key = None if key is None else bytes(key)
    payload = None if payload is None else bytes(payload)
    row["key_base64"] = _b64(key)
    row["payload_base64"] = _b64(payload)
    row["preview"], row["preview_truncated"] = preview(payload)
    return row


async def summary(conn: psycopg.AsyncConnection[Any]) -> dict[str, Any]:
    """How many dead letters there are, how many in the last hour, and the newest's time."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SQL.summary)
        row = await cur.fetchone()
    assert row is not None
    return row
