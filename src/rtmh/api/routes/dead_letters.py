"""/api/v1/dead-letters: the messages ingest refused, and one with its bytes
(rtmh.service.dead_letters)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import DeadLetterDetail, DeadLetterOut, DeadLetterSummary, PageOf
from rtmh.service import dead_letters as service
from rtmh.service.tokens import Principal

router = APIRouter(
    prefix="/dead-letters", tags=["dead letters"], responses=responses(401, 403, 422, 429)
)

Who = Annotated[Principal, Depends(requester)]


@router.get("", summary="dead letters, newest first", response_model=PageOf[DeadLetterOut])
async def list_dead_letters(
    request: Request,
    _who: Who,
    topic: Annotated[str | None, Query(min_length=1, max_length=500)] = None,
    since: Annotated[
        datetime | None, Query(description="dead-lettered at or after, with a zone")
    ] = None,
    until: Annotated[
        datetime | None, Query(description="dead-lettered before, with a zone")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        page = await service.list_dead_letters(
            conn, topic=topic, since=since, until=until, limit=limit, cursor=cursor
        )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get(
    "/summary",
    summary="how many dead letters, how many in the last hour, the newest",
    response_model=DeadLetterSummary,
)
async def dead_letter_summary(request: Request, _who: Who) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.summary(conn)


@router.get(
    "/{dead_letter_id}",
    summary="one dead letter with its key and payload (base64) and a text preview",
    response_model=DeadLetterDetail,
    responses=responses(404),
)
async def get_dead_letter(
    request: Request,
    _who: Who,
    dead_letter_id: Annotated[int, Path(ge=1, le=service.MAX_ID)],
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.get_dead_letter(conn, dead_letter_id)
