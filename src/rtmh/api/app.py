"""The FastAPI application: resources under /api/v1, health, metrics and offline docs.

``create_app(settings, postgres_url)`` builds it; `rtmh api` and `rtmh up` serve it with uvicorn
(:mod:`rtmh.api.serve`). One async psycopg pool per process, opened by the lifespan; the
connections never prepare statements, so optional filters fold away when each query is planned
with its actual parameters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import psycopg
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from psycopg_pool import AsyncConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rtmh import __version__
from rtmh.api import problems
from rtmh.api.auth import FailureLimiter
from rtmh.api.dashboard import add_dashboard
from rtmh.api.routes import (
    channels,
    dead_letters,
    events,
    incidents,
    notifications,
    rules,
    session,
    silences,
    stream,
    tokens,
)
from rtmh.api.routes import metrics as metrics_routes
from rtmh.api.schemas import RuleIn
from rtmh.api.stream import Broadcaster
from rtmh.config import Settings
from rtmh.db import migrate
from rtmh.db.connect import normalise_url

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
#: the Swagger UI files of the fastapi-offline package: /docs works without the internet
_DOCS_ASSETS = "/docs-assets"


class BodyLimit:
    """413 for a request body over the limit, by Content-Length or by counting what streams
    in (a chunked upload has no length), before any route parses it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problems.problem(
            413,
            f"the request body is over {self.max_bytes} bytes (RTMH_API_MAX_BODY_BYTES); "
            "send less per request",
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class ApiMetrics:
    """The API's own Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rtmh_api_requests",
            "API requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "rtmh_api_request_seconds",
            "API request duration, by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def create_app(settings: Settings, postgres_url: str) -> FastAPI:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            normalise_url(postgres_url),
            min_size=1,
            max_size=20,
            kwargs={"autocommit": True, "prepare_threshold": None},
            open=False,
            name="rtmh-api",
        )
        # wait=False: the API starts (and /readyz says why it is not ready) without a database
        await pool.open(wait=False)
        app.state.pool = pool
        # the live stream's LISTEN connection (one per process; it reconnects by itself)
        broadcaster = Broadcaster(
            normalise_url(postgres_url),
            registry=metrics.registry,
            keepalive_s=settings.api_stream_keepalive_s,
        )
        broadcaster.start()
        app.state.stream = broadcaster
        try:
            yield
        finally:
            await broadcaster.stop()
            await pool.close()

    app = FastAPI(
        title="RTMH API",
        version=__version__,
        summary="Incidents, rules, channels, silences, metrics and events of the RTMH hub",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth_failures = FailureLimiter(settings.api_auth_failures_per_minute)
    app.state.metrics = metrics
    problems.install(app)

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = _route_of(request)
        metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        metrics.seconds.labels(route).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)

    routers = (
        incidents,
        channels,
        rules,
        silences,
        stream,
        tokens,
        dead_letters,
        events,
        metrics_routes,
        notifications,
        session,
    )
    for module in routers:
        app.include_router(module.router, prefix=API_PREFIX)
    _add_service_routes(app, metrics)
    _add_docs(app)
    add_dashboard(app)
    return app


def _add_service_routes(app: FastAPI, metrics: ApiMetrics) -> None:
    @app.get("/healthz", tags=["service"], summary="the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["service"],
        summary="the database answers and its migrations are current",
        responses=problems.responses(503),
    )
    async def readyz(request: Request) -> Any:
        try:
            async with request.app.state.pool.connection(timeout=2) as conn:
                cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
                applied = dict(await cur.fetchall())
        except (psycopg.Error, OSError, TimeoutError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            return problems.problem(503, f"database unavailable: {reason}")
        files = migrate.load_files()
        pending = [f.version for f in files if f.version not in applied]
        changed = [f.version for f in files if applied.get(f.version, f.checksum) != f.checksum]
        if pending or changed:
            what = f"pending {', '.join(pending)}" if pending else f"changed {', '.join(changed)}"
            return problems.problem(503, f"migrations not current ({what}): run rtmh migrate")
        return {"status": "ready", "migrations": len(files)}

    @app.get(
        "/metrics",
        tags=["service"],
        summary="the API's own Prometheus metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = problems.PROBLEM_SCHEMA
            # bodies read as plain objects (checked by the engine's validator) document these
            schemas["RuleIn"] = RuleIn.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_docs(app: FastAPI) -> None:
    assets = resources.files("fastapi_offline") / "static"
    app.mount(_DOCS_ASSETS, StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="RTMH API",
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon.png",
        )
