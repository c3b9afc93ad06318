"""Bearer tokens on every /api/v1 route: 401 without a valid one, 403 with too little scope.

GET needs ``read``, changes need ``write``, tokens and channel changes need ``admin``. Failed
attempts are counted per client address; past RTMH_API_AUTH_FAILURES_PER_MINUTE in a minute the
address gets 429 before its token is even looked at, so guessing costs a minute per few tries.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Final

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rtmh.service.tokens import Principal, Scope, authenticate

_READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_WINDOW_S: Final = 60.0

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


def access(*, scope: Scope | None = None) -> Callable[..., Awaitable[Principal]]:
    """The dependency that authenticates a request and checks its scope: ``scope``, or by
    method when None (read for GET, write for the rest)."""

    async def principal(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    ) -> Principal:
        needed: Scope = scope or ("read" if request.method in _READ_METHODS else "write")
        limiter: FailureLimiter = request.app.state.auth_failures
        address = request.client.host if request.client else "unknown"
        wait = limiter.retry_after(address)
        if wait is not None:
            raise HTTPException(
                429,
                f"too many failed token checks from {address}; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        if credentials is None:
            limiter.failed(address)
            raise _unauthorized(
                "this route needs a token: send 'Authorization: Bearer <token>' "
                "(rtmh token create NAME --scope read makes one)"
            )
        async with request.app.state.pool.connection() as conn:
            found = await authenticate(conn, credentials.credentials)
        if found is None:
            limiter.failed(address)
            raise _unauthorized("the token is unknown, revoked or mistyped")
        if not found.allows(needed):
            raise HTTPException(
                403,
                f"token {found.name!r} has scope {found.scope!r}; this needs {needed!r} "
                f"(rtmh token create NAME --scope {needed})",
            )
        request.state.principal = found
        return found

    return principal


#: the usual dependency: read for GET, write for changes
requester = access()
#: tokens and channel changes
administrator = access(scope="admin")
#: a POST that changes nothing (a backtest)
reader = access(scope="read")
