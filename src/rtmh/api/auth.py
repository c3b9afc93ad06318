"""Who is calling, on every /api/v1 route: 401 without valid credentials, 403 with too little
scope.

Scripts send a bearer token; the dashboard's browser sends its session cookie (made by signing
in, :mod:`rtmh.service.sessions`), which acts as the token it was made for. A cookie goes with
every request the browser makes to this host, whoever's page starts it, so a change signed by a
cookie must also carry the ``X-RTMH-Dashboard`` header: another site cannot add a header without
a CORS preflight, which this API never grants. SameSite=Strict alone would not do: a page on
another port of the same host is the same site.

GET needs ``read``, changes need ``write``, tokens and channel changes need ``admin``. Failed
attempts are counted per client address; past RTMH_API_AUTH_FAILURES_PER_MINUTE in a minute the
address gets 429 before its token is even looked at, so guessing costs a minute per few tries.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Depends, HTTPException, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rtmh.service.sessions import SESSION_TTL, Issued, session_principal
from rtmh.service.tokens import Principal, Scope, authenticate

_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_WINDOW_S: Final = 60.0
#: the dashboard's session cookie (HttpOnly: the page's scripts never see it)
SESSION_COOKIE: Final = "rtmh_session"
#: what a cookie-signed change must carry (the dashboard's scripts always send it)
DASHBOARD_HEADER: Final = "X-RTMH-Dashboard"

bearer = HTTPBearer(
    auto_error=False,
    description="a token from `rtmh token create NAME --scope read|write|admin`",
)


class FailureLimiter:
    """Failed authentications per client address over the last minute (in this process)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._failures: defaultdict[str, deque[float]] = defaultdict(deque)

    def _recent(self, address: str) -> deque[float]:
        times = self._failures[address]
        horizon = self.clock() - _WINDOW_S
        while times and times[0] <= horizon:
            times.popleft()
        return times

    def retry_after(self, address: str) -> int | None:
        """Seconds until the address may try again, or None when it may try now."""
        times = self._recent(address)
        if len(times) < self.per_minute:
            if not times:
                del self._failures[address]
            return None
        return max(1, int(times[0] + _WINDOW_S - self.clock()) + 1)

    def failed(self, address: str) -> None:
        self._recent(address).append(self.clock())


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": 'Bearer realm="rtmh"'})


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def refuse_if_limited(request: Request) -> None:
    """429 when the client's address failed too often in the last minute."""
    limiter: FailureLimiter = request.app.state.auth_failures
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        raise HTTPException(
            429,
            f"too many failed token checks from {address}; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def note_failure(request: Request) -> None:
    """Count a failed check against the client's address."""
    request.app.state.auth_failures.failed(client_address(request))


def failed(request: Request, detail: str) -> HTTPException:
    """Count a failed check; the 401 to raise."""
    note_failure(request)
    return _unauthorized(detail)


def set_session_cookie(request: Request, response: Response, session: Issued) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.text,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


async def _identify(
    request: Request, bearer_token: str | None, cookie: str | None
) -> Principal | None:
    """Who a bearer token, or else a dashboard session cookie, acts as (None: neither works)."""
    if bearer_token is None and cookie is None:
        return None
    async with request.app.state.pool.connection() as conn:
        if bearer_token is not None:
            return await authenticate(conn, bearer_token)
        assert cookie is not None
        return await session_principal(conn, cookie)


def access(*, scope: Scope | None = None) -> Callable[..., Awaitable[Principal]]:
    """The dependency that authenticates a request and checks its scope: ``scope``, or by
    method when None (read for GET, write for the rest)."""

    async def principal(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Principal:
        needed: Scope = scope or ("read" if request.method in _READ_METHODS else "write")
        refuse_if_limited(request)
        cookie = request.cookies.get(SESSION_COOKIE)
        if credentials is None and cookie is None:
            raise failed(
                request,
                "this route needs a token: send 'Authorization: Bearer <token>' "
                "(rtmh token create NAME --scope read makes one), or sign in to the dashboard",
            )
        found = await _identify(
            request, credentials.credentials if credentials is not None else None, cookie
        )
        if found is None:
            raise failed(
                request,
                "the token is unknown, revoked or mistyped"
                if credentials is not None
                else "the dashboard session has ended or expired: sign in again "
                "(rtmh dashboard prints a new sign-in link)",
            )
        if (
            credentials is None
            and request.method not in _READ_METHODS
            and request.headers.get(DASHBOARD_HEADER) != "1"
        ):
            raise HTTPException(
                403,
                f"a change signed with the dashboard's cookie must carry '{DASHBOARD_HEADER}: 1' "
                "(a guard against requests from other sites); scripts should send a bearer token",
            )
        if not found.allows(needed):
            raise HTTPException(
                403,
                f"token {found.name!r} has scope {found.scope!r}; this needs {needed!r} "
                f"(rtmh token create NAME --scope {needed})",
            )
        request.state.principal = found
        request.state.via = "bearer" if credentials is not None else "cookie"
        return found

    return principal


async def still_valid(request: Request) -> bool:
    """Whether the credentials a request came with still authenticate. A live stream outlasts
    the check made when it opened: it asks this now and then, so revoking a token or signing
    out ends the streams it holds open too."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    bearer_token = token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return await _identify(request, bearer_token, request.cookies.get(SESSION_COOKIE)) is not None


#: the usual dependency: read for GET, write for changes
requester = access()
#: tokens and channel changes
administrator = access(scope="admin")
#: a POST that changes nothing (a backtest)
reader = access(scope="read")
