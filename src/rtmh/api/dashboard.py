"""The web dashboard, served by the API: the page at / (and at each of its own paths, so a shared
link or a reload opens the same view), its files under /assets, and /login, which trades a
one-time code from `rtmh up` or `rtmh dashboard` for a session cookie.

The page is one index.html whose ES modules (rtmh/web/assets) call /api/v1 with the cookie.
Every dashboard response carries a Content-Security-Policy that allows only this origin's own
scripts, styles and connections: with no inline script allowed, text that reaches the page from
an incident or a log line cannot run even if it were ever rendered as markup.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Final

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import Scope

from rtmh.api import auth
from rtmh.service import sessions

_WEB = resources.files("rtmh") / "web"
#: the page's own paths (client-side routes); anything else is a 404 as usual
PAGES: Final = (
    "/",
    "/incidents",
    "/incidents/{incident_id}",
    "/rules",
    "/rules/new",
    "/rules/{rule}",
    "/silences",
    "/channels",
    "/notifications",
    "/events",
    "/dead-letters",
    "/dead-letters/{dead_letter_id}",
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_LOGIN_FAILED: Final = "/login?error=used-or-expired"


class _Assets(StaticFiles):
    """The page's files, revalidated on each load (they change with each release, and an ETag
    answer costs a 304), with the dashboard's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(SECURITY_HEADERS)
        return response


def _page(html: str) -> HTMLResponse:
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})


def _local_path(next_path: str | None) -> str:
    """Where to go after signing in: a path on this site, never another site's address
    (``//host`` is one, and so is anything with a scheme)."""
    if (
        not next_path
        or not next_path.startswith("/")
        or next_path.startswith(("//", "/\\"))
        or not next_path.isprintable()
    ):
        return "/"
    return next_path


def add_dashboard(app: FastAPI) -> None:
    app.mount("/assets", _Assets(directory=str(_WEB / "assets")), name="dashboard-assets")
    # read once: it is the same few hundred bytes for every page path and every load
    html = (_WEB / "index.html").read_text(encoding="utf-8")

    async def page() -> HTMLResponse:
        return _page(html)

    for path in PAGES:
        app.add_api_route(path, page, methods=["GET"], include_in_schema=False)

    @app.get("/login", include_in_schema=False)
    async def login(
        request: Request,
        code: Annotated[str | None, Query(max_length=200)] = None,
        next_path: Annotated[str | None, Query(alias="next", max_length=2000)] = None,
    ) -> Response:
        if code is None:
            return _page(html)  # the sign-in form (paste a token)
        auth.refuse_if_limited(request)
        async with request.app.state.pool.connection() as conn:
            session = await sessions.exchange_code(conn, code)
        if session is None:
            # counted like a wrong token: codes cannot be guessed faster than tokens
            auth.note_failure(request)
            return RedirectResponse(_LOGIN_FAILED, status_code=303, headers=SECURITY_HEADERS)
        # 303 to a URL without the code: the address bar and the history never keep it
        response = RedirectResponse(
            _local_path(next_path), status_code=303, headers=SECURITY_HEADERS
        )
        auth.set_session_cookie(request, response, session)
        return response
