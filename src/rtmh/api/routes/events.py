"""/api/v1/events: search the raw events, newest first (rtmh.service.events)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import PageOf, RawEvent
from rtmh.service import events as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/events", tags=["events"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]
Level = Literal["trace", "debug", "info", "warn", "error", "fatal"]


@router.get(
    "",
    summary="raw events, newest first",
    description=(
        "With `service`: that service's events by event time, newest first. Without: every "
        "service's events by arrival, newest first (the order an index gives across services). "
        "Either way `since`/`until` bound the event time (default: the last hour; at most 7 "
        "days). `q` is a case-insensitive substring of the message (`msg` or `message`), "
        "matched literally."
    ),
    response_model=PageOf[RawEvent],
)
async def list_events(
    request: Request,
    _who: Who,
    service_name: Annotated[
        str | None, Query(alias="service", min_length=1, max_length=500)
    ] = None,
    level: Annotated[list[Level] | None, Query(description="one or more levels")] = None,
    topic: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    since: Annotated[
        datetime | None, Query(description="event time at or after, with a zone")
    ] = None,
    until: Annotated[datetime | None, Query(description="event time before, with a zone")] = None,
    q: Annotated[
        str | None,
        Query(min_length=1, max_length=service.MAX_TEXT, description="text in the message"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Any:
    filters = service.EventFilter(
        service=service_name,
        levels=list(level) if level else None,
        topic=topic,
        since=since,
        until=until,
        text=q,
    )
    async with request.app.state.pool.connection() as conn:
        page = await service.list_events(conn, filters, limit=limit, cursor=cursor)
    return {"items": page.items, "next_cursor": page.next_cursor}
