"""/api/v1/tokens: admin only (rtmh.service.tokens); `rtmh token` does the same from a shell."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from rtmh.api.auth import administrator
from rtmh.api.problems import responses
from rtmh.api.schemas import TokenCreated, TokenIn, TokenOut
from rtmh.service import tokens as service
from rtmh.service.tokens import Principal

router = APIRouter(prefix="/tokens", tags=["tokens"], responses=responses(401, 403, 422, 429))

Admin = Annotated[Principal, Depends(administrator)]


@router.get("", summary="tokens (never their secrets)", response_model=list[TokenOut])
async def list_tokens(
    request: Request, _who: Admin, include_revoked: Annotated[bool, Query()] = False
) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.list_tokens(conn, include_revoked=include_revoked)


@router.post(
    "",
    summary="make a token (shown once)",
    status_code=201,
    response_model=TokenCreated,
    responses=responses(409),
)
async def create_token(request: Request, _who: Admin, body: TokenIn) -> Any:
    async with request.app.state.pool.connection() as conn:
        token, info = await service.create_token(conn, body.name, body.scope)
    return {**info.as_dict(), "token": token}


@router.post(
    "/{token}/revoke",
    summary="revoke a token, by name or id",
    response_model=TokenOut,
    responses=responses(404),
)
async def revoke_token(request: Request, _who: Admin, token: str) -> Any:
    async with request.app.state.pool.connection() as conn:
        return await service.revoke_token(conn, token)
