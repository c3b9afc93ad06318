"""/api/v1/channels: read with a read token, change and test-send with an admin token
(rtmh.service.channels)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from rtmh.api.auth import administrator, requester
from rtmh.api.problems import responses
from rtmh.api.schemas import ChannelIn, ChannelOut, ChannelTestOut, ChannelUpdate
from rtmh.config import Settings
from rtmh.notify.targets import TargetPolicy
from rtmh.service import channels as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/channels", tags=["channels"], responses=responses(401, 403, 422, 429))

Who = Annotated[Principal, Depends(requester)]
Admin = Annotated[Principal, Depends(administrator)]


def _policy(request: Request) -> TargetPolicy:
    settings: Settings = request.app.state.settings
    return TargetPolicy.from_settings(settings)


@router.get("", summary="every channel (secrets: set or not)", response_model=list[ChannelOut])
async def list_channels(request: Request, _who: Who) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.list_channels(conn)


@router.post(
    "",
    summary="add a channel",
    status_code=201,
    response_model=ChannelOut,
    responses=responses(409),
)
async def create_channel(request: Request, _who: Admin, body: ChannelIn) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.create_channel(
            conn,
            _policy(request),
            name=body.name,
            type_=body.type,
            config=body.config,
            secrets=body.secrets,
            enabled=body.enabled,
        )


@router.get("/{name}", summary="one channel", response_model=ChannelOut, responses=responses(404))
async def get_channel(request: Request, _who: Who, name: str) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.get_channel(conn, name)


@router.put(
    "/{name}",
    summary="change a channel (secrets not named are kept)",
    response_model=ChannelOut,
    responses=responses(404),
)
async def update_channel(request: Request, _who: Admin, name: str, body: ChannelUpdate) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.update_channel(
            conn,
            _policy(request),
            name,
            type_=body.type,
            config=body.config,
            secrets=body.secrets,
            enabled=body.enabled,
        )


@router.delete(
    "/{name}",
    summary="delete a channel no rule uses",
    status_code=204,
    responses=responses(404, 409),
)
async def delete_channel(request: Request, _who: Admin, name: str) -> Response:
    async with request.app.state.pool.connection() as conn:
        await service.delete_channel(conn, name)
    return Response(status_code=204)


@router.post(
    "/{name}/test",
    summary="send a test notification now and show the receiver's answer",
    response_model=ChannelTestOut,
    responses=responses(404),
)
async def test_channel(request: Request, _who: Admin, name: str) -> Any:
    settings: Settings = request.app.state.settings
    async with request.app.state.pool.connection() as conn:
        result = await service.test_channel(conn, _policy(request), name, settings.public_url)
    return {
        "ok": result.ok,
        "http_status": result.http_status,
        "error": result.error,
        "response_excerpt": result.response_excerpt,
        "retryable": result.retryable,
    }
