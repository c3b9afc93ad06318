"""Raw events for people: a search over raw_events (service, level, topic, time range, message
text), newest first, keyset-paginated (db/queries/events.sql says which index serves what).

With a service, events are ordered by event time (then id); without one, by arrival (id), the
only order an index gives across every service. The cursor remembers which: it only continues
the kind of search that made it. The message text is matched case-insensitively as a literal
substring (the user's ``%``, ``_`` and ``\\`` mean themselves), always as a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from rtmh.db.queries import load
from rtmh.ingest.shapes import DEFAULT_MAX_FUTURE_S
from rtmh.service.errors import Invalid
from rtmh.service.paging import MAX_ID, Page, bad_cursor, check_limit, decode_cursor, page_of
from rtmh.service.timerange import text, time_range

SQL = load("events")

LEVELS: Final = ("trace", "debug", "info", "warn", "error", "fatal")
DEFAULT_RANGE: Final = timedelta(hours=1)
#: raw_events keeps 7 days (RTMH_RETENTION_DAYS)
LONGEST_RANGE: Final = timedelta(days=7)
#: a search that reads this long is cut off (it holds a pooled connection meanwhile)
SEARCH_TIMEOUT_MS: Final = 10_000
#: decode never stores an event time more than DEFAULT_MAX_FUTURE_S (1 h) after it decodes the
#: message, and the row's created_at (its transaction's start) comes later; 10 more minutes
#: cover a worker clock ahead of the database's. So created_at >= event_time - ARRIVAL_SLACK
#: for every row, and bounding created_at by since - ARRIVAL_SLACK prunes partitions and loses
#: nothing.
ARRIVAL_SLACK: Final = timedelta(seconds=DEFAULT_MAX_FUTURE_S) + timedelta(minutes=10)
MAX_TEXT: Final = 500


@dataclass(frozen=True, slots=True)
class EventFilter:
    service: str | None = None
    levels: list[str] | None = None
    topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None


def like_pattern(text: str) -> str:
    """An ILIKE pattern (ESCAPE '\\') matching ``text`` anywhere, each character literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _params(filters: EventFilter) -> dict[str, Any]:
    for level in filters.levels or ():
        if level not in LEVELS:
            raise Invalid("level", f"unknown value {level!r}; use {', '.join(LEVELS)}")
    if filters.text is not None and len(filters.text) > MAX_TEXT:
        raise Invalid("q", f"at most {MAX_TEXT} characters, got {len(filters.text)}")
    span = time_range(filters.since, filters.until, default=DEFAULT_RANGE, longest=LONGEST_RANGE)
    wanted = text("q", filters.text)
    return {
        "service": text("service", filters.service),
        "levels": list(filters.levels) if filters.levels else None,
        "topic": text("topic", filters.topic),
        "pattern": like_pattern(wanted) if wanted else None,
        "since": span.since,
        "until": span.until,
        "created_from": span.since - ARRIVAL_SLACK,
        "after_time": None,
        "after_id": None,
    }


def _after(cursor: str | None, by_service: bool) -> tuple[datetime | None, int | None]:
    """The (event_time, id) a cursor carries; event_time is None for an arrival-order one."""
    key = decode_cursor(cursor, 2)
    if key is None:
        return None, None
    when, ident = key
    if not isinstance(ident, int) or isinstance(ident, bool) or not 0 < ident <= MAX_ID:
        raise bad_cursor()
    if when is None:
        if by_service:
            raise Invalid(
                "cursor", "this cursor continues a search without service; start without cursor"
            )
        return None, ident
    if not by_service:
        raise Invalid("cursor", "this cursor continues a search by service; start without cursor")
    try:
        after = datetime.fromisoformat(str(when))
    except ValueError:
        raise bad_cursor() from None
    if after.tzinfo is None:
        raise bad_cursor()
    return after, ident


async def list_events(
    conn: psycopg.AsyncConnection[Any],
    filters: EventFilter,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    check_limit(limit)
    params = _params(filters)
    by_service = filters.service is not None
    params["after_time"], params["after_id"] = _after(cursor, by_service)
    params["limit"] = limit + 1
    query = SQL.list_events_by_service if by_service else SQL.list_events
    try:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SQL.search_timeout, (str(SEARCH_TIMEOUT_MS),))
            await cur.execute(query, params)
            rows = await cur.fetchall()
    except psycopg.errors.QueryCanceled:
        field = "q" if filters.text else "since"
        raise Invalid(
            field,
            f"the search ran over {SEARCH_TIMEOUT_MS // 1000} s: narrow the time range, or "
            "add service or level",
        ) from None
    return page_of(
        rows,
        limit,
        lambda row: [row["event_time"].isoformat() if by_service else None, row["id"]],
    )
