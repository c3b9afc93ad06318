"""/api/v1/stream: server-sent events of incident changes, notification results and ingest
throughput, from the process's broadcaster (:mod:`rtmh.api.stream`).

Each stream_events row is one event (``id``, ``event: incident|notification``, ``data``: the
row's JSON plus ``created_at``); ingest throughput comes as ``event: ingest`` without an id (a
gauge: nothing to resume). A client that reconnects with ``Last-Event-ID`` (or
``?last_event_id=``, for clients that cannot set headers) first gets what it missed from the
table, then the live events, with nothing lost or repeated in between: it subscribes first, so
the live queue holds everything above the broadcaster's watermark, and replays from the table
exactly up to that watermark.

sse-starlette's EventSourceResponse does the transport: the heartbeat comment on its own task,
the client's disconnect noticed at once (the generator is cancelled, so its ``finally`` frees
the queue), and open streams ended when uvicorn is asked to stop, which otherwise waits its
whole graceful-shutdown timeout for clients that never hang up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final, get_args

from fastapi import APIRouter, Depends, Header, Query, Request
from psycopg_pool import AsyncConnectionPool
from sse_starlette import EventSourceResponse, ServerSentEvent

from rtmh.api.auth import requester, still_valid
from rtmh.api.problems import problem, responses
from rtmh.api.stream import KINDS, Broadcaster, Kind, StreamEvent, Subscription, event_of_row
from rtmh.db.queries import load
from rtmh.service.tokens import Principal

SQL = load("stream")

router = APIRouter(tags=["stream"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]

#: how long a request waits for a broadcaster that has not reached the database yet
_READY_WAIT_S: Final = 5.0
#: the reconnection delay EventSource clients are told to use (ms)
_RETRY_MS: Final = 2000
#: replayed rows per query: the pool connection is given back between pages
_REPLAY_PAGE: Final = 500
#: plain LF line ends: what curl users and line-based clients expect to read
_SEP: Final = "\n"
#: a client that takes this long to accept one chunk is gone (the queue would overflow anyway)
_SEND_TIMEOUT_S: Final = 30.0
#: the last comment of a stream whose token was revoked or whose session ended
_REVOKED: Final = "credentials revoked or expired: sign in again"


def _kinds(types: str | None) -> frozenset[Kind] | str:
    """The ``types`` filter, or the problem with it."""
    if types is None:
        return frozenset(KINDS)
    wanted = {t.strip() for t in types.split(",") if t.strip()}
    unknown = sorted(wanted - set(KINDS))
    if unknown or not wanted:
        named = f"unknown {', '.join(unknown)}" if unknown else "empty"
        return f"types: {named}; choose from {', '.join(KINDS)}"
    return frozenset(k for k in get_args(Kind) if k in wanted)


def _resume_from(header: str | None, query: str | None) -> int | str | None:
    """The id to resume after, or the problem with it. The header wins: a browser's
    EventSource keeps the URL it was opened with but sends the newest id on each reconnect."""
    raw = header if header is not None else query
    if raw is None or raw.strip() == "":
        return None
    if not raw.strip().isdigit():
        return f"last_event_id: {raw[:40]!r} is not an event id (a non-negative integer)"
    return int(raw.strip())


def _sse(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(
        json.dumps(event.data, separators=(",", ":"), default=str),
        event=event.kind,
        id=None if event.id is None else str(event.id),
        sep=_SEP,
    )


async def _replay(
    pool: AsyncConnectionPool[Any], sub: Subscription, after: int, skipped: dict[int, float]
) -> AsyncIterator[StreamEvent]:
    """The rows after ``after`` up to the subscription's watermark, page by page."""
    kinds = [k for k in sub.kinds if k != "ingest"]
    while after < sub.watermark and kinds:
        async with pool.connection() as conn:
            cur = await conn.execute(
                SQL.replay,
                {"after": after, "upto": sub.watermark, "kinds": kinds, "limit": _REPLAY_PAGE},
            )
            rows = await cur.fetchall()
        for row_id, kind, data, created_at in rows:
            if row_id in skipped:
                sub.replayed_late.add(row_id)
            yield event_of_row(row_id, kind, data, created_at)
            after = row_id
        if len(rows) < _REPLAY_PAGE:
            return


async def _next_within(sub: Subscription, wait_s: float) -> tuple[bool, StreamEvent | None]:
    """(True, the subscription's next event; None: the stream ended), or (False, None) when
    none came within ``wait_s``. Cancelling the queue's get on a timeout loses nothing
    (asyncio.Queue)."""
    try:
        return True, await asyncio.wait_for(sub.next(), timeout=wait_s)
    except TimeoutError:
        return False, None


async def _events(
    pool: AsyncConnectionPool[Any],
    broadcaster: Broadcaster,
    kinds: frozenset[Kind],
    after: int | None,
    still_valid: Callable[[], Awaitable[bool]],
) -> AsyncIterator[ServerSentEvent]:
    sub = broadcaster.subscribe(kinds)
    # the credentials are checked again at each keepalive interval: a revoked token or an
    # ended dashboard session stops its open streams within one interval
    recheck_s = broadcaster.keepalive_s
    checked = time.monotonic()
    try:
        yield ServerSentEvent(comment="rtmh stream", retry=_RETRY_MS, sep=_SEP)
        if after is not None:
            async for replayed in _replay(pool, sub, after, broadcaster.skipped):
                yield _sse(replayed)
        while True:
            came, event = await _next_within(sub, recheck_s)
            if time.monotonic() - checked >= recheck_s:
                checked = time.monotonic()
                if not await still_valid():
                    yield ServerSentEvent(comment=_REVOKED, sep=_SEP)
                    return
            if not came:
                continue
            if event is None:
                yield ServerSentEvent(comment=sub.ended or "end of stream", sep=_SEP)
                return
            if event.id is not None and after is not None and event.id <= after:
                continue  # the client had it before it reconnected
            if event.late and event.id in sub.replayed_late:
                continue  # committed before this client's replay read it
            yield _sse(event)
    finally:
        # cancelled when the client goes away: this runs, and the queue goes with it
        broadcaster.unsubscribe(sub)


@router.get(
    "/stream",
    summary="live events: incident changes, notification results, ingest throughput (SSE)",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": (
                "text/event-stream. `event: incident` and `event: notification` carry an `id` "
                "(resume with Last-Event-ID); `event: ingest` is a gauge without one; "
                "`: keepalive` comments every 15 s"
            ),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **responses(503),
    },
)
async def stream(
    request: Request,
    _who: Who,
    types: Annotated[
        str | None,
        Query(
            max_length=100,
            description="comma-separated kinds to receive: incident, notification, ingest "
            "(default: all)",
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Query(
            max_length=40,
            description="resume after this event id (for clients that cannot send the "
            "Last-Event-ID header; the header wins)",
        ),
    ] = None,
    last_event_id_header: Annotated[
        str | None,
        Header(alias="Last-Event-ID", max_length=40, include_in_schema=False),
    ] = None,
) -> Any:
    kinds = _kinds(types)
    if isinstance(kinds, str):
        return problem(422, kinds, errors=[{"field": "types", "message": kinds}])
    after = _resume_from(last_event_id_header, last_event_id)
    if isinstance(after, str):
        return problem(422, after, errors=[{"field": "last_event_id", "message": after}])
    broadcaster: Broadcaster = request.app.state.stream
    if not await broadcaster.wait_ready(_READY_WAIT_S):
        return problem(
            503,
            "the live stream has not reached the database yet; retry shortly",
            headers={"Retry-After": "5"},
        )
    return EventSourceResponse(
        _events(request.app.state.pool, broadcaster, kinds, after, lambda: still_valid(request)),
        ping=broadcaster.keepalive_s,
        ping_message_factory=lambda: ServerSentEvent(comment="keepalive", sep=_SEP),
        send_timeout=_SEND_TIMEOUT_S,
        sep=_SEP,
    )
