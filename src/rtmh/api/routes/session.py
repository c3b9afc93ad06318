"""/api/v1/session: who is calling, and the dashboard's sign-in and sign-out
(rtmh.service.sessions). The one-time sign-in link itself is /login (rtmh.api.dashboard)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from rtmh.api import auth
from rtmh.api.problems import responses
from rtmh.api.schemas import SessionIn, SessionOut
from rtmh.service import sessions as service
from rtmh.service.tokens import Principal, authenticate

router = APIRouter(prefix="/session", tags=["session"], responses=responses(422, 429))

Who = Annotated[Principal, Depends(auth.requester)]


@router.get(
    "",
    summary="who the credentials act as (the dashboard asks this first)",
    response_model=SessionOut,
    responses=responses(401, 403),
)
async def whoami(request: Request, who: Who) -> Any:
    return {"name": who.name, "scope": who.scope, "via": request.state.via}


@router.post(
    "",
    summary="sign a browser in with a token: the answer sets the session cookie",
    response_model=SessionOut,
    responses=responses(401),
)
async def sign_in(request: Request, response: Response, body: SessionIn) -> Any:
    auth.refuse_if_limited(request)
    async with request.app.state.pool.connection() as conn:
        found = await authenticate(conn, body.token)
        if found is None:
            raise auth.failed(request, "the token is unknown, revoked or mistyped")
        session = await service.start_session(conn, found)
    auth.set_session_cookie(request, response, session)
    return {"name": found.name, "scope": found.scope, "via": "cookie"}


@router.delete("", summary="sign out: the session cookie stops working", status_code=204)
async def sign_out(request: Request) -> Response:
    cookie = request.cookies.get(auth.SESSION_COOKIE)
    if cookie is not None:
        async with request.app.state.pool.connection() as conn:
            await service.end_session(conn, cookie)
    response = Response(status_code=204)
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
