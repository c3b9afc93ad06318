"""/api/v1/silences: create, list, show, expire (rtmh.service.silences)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from rtmh.api.auth import requester
from rtmh.api.problems import responses
from rtmh.api.schemas import SilenceIn, SilenceOut
from rtmh.service import silences as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/silences", tags=["silences"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]
_ID = Annotated[int, "silence id"]


@router.post(
    "",
    summary="mute matching notifications for a while",
    status_code=201,
    response_model=SilenceOut,
)
async def create_silence(request: Request, who: Who, body: SilenceIn) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.create_silence(
            conn,
            body.matchers.model_dump(),
            starts_at=body.starts_at,
            ends_at=body.ends_at,
            duration_seconds=body.duration_seconds,
            comment=body.comment,
            created_by=who.name,
        )


@router.get("", summary="silences, latest ending first", response_model=list[SilenceOut])
async def list_silences(
    request: Request,
    _who: Who,
    state: Annotated[Literal["pending", "active", "expired"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.list_silences(conn, state, limit)


@router.get(
    "/{silence_id}", summary="one silence", response_model=SilenceOut, responses=responses(404)
)
async def get_silence(request: Request, _who: Who, silence_id: int) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.get_silence(conn, silence_id)


@router.post(
    "/{silence_id}/expire",
    summary="end it now",
    response_model=SilenceOut,
    responses=responses(404),
)
async def expire_silence(request: Request, _who: Who, silence_id: int) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.expire_silence(conn, silence_id)
