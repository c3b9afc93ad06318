"""The client side of `rtmh bench api` (rtmh.bench.api): the four request types and their
variety, a lean keep-alive HTTP/1.1 client that sends them closed-loop, and the API's own
request histogram read back from /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlencode

import msgspec
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from rtmh.bench import api_data
from rtmh.bench.stats import percentile
from rtmh.service import events as events_service
from rtmh.service import incidents as incidents_service
from rtmh.service import metrics as metrics_service

KINDS: Final = ("incident_list", "incident", "metric_series", "events_search")
#: the label each request's route has in the API's histogram (the route template; the API
#: labels routes without the /api/v1 prefix today, and with it is matched too)
ROUTES: Final = {
    "incident_list": "/incidents",
    "incident": "/incidents/{incident_id}",
    "metric_series": "/metrics/series",
    "events_search": "/events",
}

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Request:
    """One request of a kind: its path and query for HTTP, and the same as a service call."""

    path: str
    params: Params
    direct: Callable[[psycopg.AsyncConnection[Any]], Awaitable[object]]


@dataclass(frozen=True)
class Universe:
    """What the requests choose from."""

    incident_ids: list[str]
    services: list[str]
    metric_types: list[str]
    #: the data's present: its newest event (the generation takes minutes, and "the last
    #: hour" before the real clock would hold fewer rows by then)
    now: datetime


def make_request(kind: str, world: Universe, rng: random.Random) -> Request:
    """A request of ``kind`` with realistic variety (its parameters drawn with ``rng``); the
    ranges end up to 5 minutes before the data's present, as dashboards opened at different
    moments ask."""
    now = world.now - timedelta(seconds=rng.uniform(0, 300))
    if kind == "incident_list":
        draw = rng.random()
        filters = incidents_service.IncidentFilter()
        params: Params = ()
        if draw < 0.25:
            filters = incidents_service.IncidentFilter(status=["open", "investigating"])
            params = (("status", "open"), ("status", "investigating"))
        elif draw < 0.5:
            service = rng.choice(world.services)
            filters = incidents_service.IncidentFilter(service=service)
            params = (("service", service),)
        return Request(
            "/api/v1/incidents",
            params,
            lambda conn: incidents_service.list_incidents(conn, filters, limit=50),
        )
    if kind == "incident":
        ident = rng.choice(world.incident_ids)
        return Request(
            f"/api/v1/incidents/{ident}",
            (),
            lambda conn: incidents_service.get_incident(conn, ident),
        )
    if kind == "metric_series":
        key, mtype = rng.choice(world.services), rng.choice(world.metric_types)
        since = now - api_data.SPAN
        return Request(
            "/api/v1/metrics/series",
            (
                ("window_key", key),
                ("metric_type", mtype),
                ("since", since.isoformat()),
                ("until", now.isoformat()),
            ),
            lambda conn: metrics_service.series(conn, key, mtype, since=since, until=now),
        )
    if kind == "events_search":
        service = rng.choice(world.services)
        since = now - timedelta(hours=1)
        search = events_service.EventFilter(
            service=service, levels=["error"], since=since, until=now
        )
        return Request(
            "/api/v1/events",
            (
                ("service", service),
                ("level", "error"),
                ("since", since.isoformat()),
                ("until", now.isoformat()),
                ("limit", "50"),
            ),
            lambda conn: events_service.list_events(conn, search, limit=50),
        )
    raise ValueError(f"unknown request kind {kind!r}")


def _items(kind: str, body: Any) -> int:
    """Rows in an answer: list items, series points, or 1 for an incident."""
    if kind == "metric_series":
        return len(body.get("points", []))
    if kind == "incident":
        return 1
    return len(body.get("items", []))


@dataclass
class Load:
    latencies_s: list[float]
    items: int
    errors: Counter[str]
    wall_s: float


class HttpError(Exception):
    """An answer this client cannot read."""


class Connection:
    """One keep-alive HTTP/1.1 connection on asyncio streams, GET only.

    The load is sent with this rather than httpx: on a 2-core machine httpx spent ~5 ms of CPU
    a request (more than the API it measured) on the cores the API and PostgreSQL need, so its
    own queueing ended up in the latencies. This costs a fraction of that: one write, one read
    of the head, one of the body (uvicorn sends Content-Length; chunked is read too)."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        lines = [f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, params: Params) -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        target = f"{path}?{urlencode(params)}" if params else path
        self._writer.write(f"GET {target} HTTP/1.1\r\n".encode() + self._head)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            await self.close()
            raise HttpError(type(error).__name__) from None
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if b"content-length" in fields:
            body = await self._reader.readexactly(int(fields[b"content-length"]))
        elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = await self._chunked(self._reader)
        else:
            await self.close()
            raise HttpError("no length")
        if fields.get(b"connection", b"").lower() == b"close":
            await self.close()
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def load(
    connections: list[Connection],
    kind: str,
    world: Universe,
    seconds: float,
    seed: int,
) -> Load:
    """One closed-loop client on each connection, sending ``kind`` for ``seconds``."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    items = 0
    began = time.perf_counter()
    deadline = began + seconds

    async def one(n: int, connection: Connection) -> None:
        nonlocal items
        rng = random.Random(seed * 1000 + n)
        while time.perf_counter() < deadline:
            request = make_request(kind, world, rng)
            started = time.perf_counter()
            try:
                status, body = await connection.get(request.path, request.params)
            except (OSError, HttpError, asyncio.IncompleteReadError) as error:
                errors[type(error).__name__] += 1
                await connection.close()
                continue
            elapsed = time.perf_counter() - started
            if status != 200:
                errors[f"HTTP {status}"] += 1
                continue
            latencies.append(elapsed)
            items += _items(kind, msgspec.json.decode(body))

    await asyncio.gather(*(one(n, c) for n, c in enumerate(connections)))
    return Load(latencies, items, errors, time.perf_counter() - began)


def _route_is(labels: dict[str, str], route: str) -> bool:
    return labels.get("route") in (route, f"/api/v1{route}")


def _histogram(text: str, route: str) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of the API's request histogram for
    ``route``, from a /metrics page."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "rtmh_api_request_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and _route_is(sample.labels, route):
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def _sum_count(text: str, route: str) -> tuple[float, float]:
    total = count = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "rtmh_api_request_seconds":
            continue
        for sample in family.samples:
            if not _route_is(sample.labels, route):
                continue
            if sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return total, count


def server_side(before: str, after: str, route: str) -> dict[str, Any]:
    """The server's own durations of ``route`` between two scrapes: count, mean and quantiles
    interpolated linearly within the histogram's buckets (as Prometheus' histogram_quantile)."""
    low, high = _histogram(before, route), _histogram(after, route)
    bounds = sorted(high)
    cumulative = [high[b] - low.get(b, 0.0) for b in bounds]
    sum_after, count_after = _sum_count(after, route)
    sum_before, count_before = _sum_count(before, route)
    count = count_after - count_before
    out: dict[str, Any] = {"count": int(count)}
    if count <= 0:
        return out
    out["mean_ms"] = (sum_after - sum_before) / count * 1000
    for q in (0.5, 0.95, 0.99):
        rank = q * count
        previous_bound, previous_count = 0.0, 0.0
        value = float("inf")
        for bound, seen in zip(bounds, cumulative, strict=True):
            if seen >= rank:
                if bound == float("inf"):
                    value = previous_bound  # beyond the last bucket: its lower edge
                else:
                    share = (rank - previous_count) / max(seen - previous_count, 1e-9)
                    value = previous_bound + (bound - previous_bound) * share
                break
            previous_bound, previous_count = bound, seen
        out[f"p{round(q * 100)}_ms"] = value * 1000
    out["within_50ms"] = round(
        next((seen for b, seen in zip(bounds, cumulative, strict=True) if b >= 0.05), count)
        / count,
        4,
    )
    return out


def quantiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "p50_ms": percentile(values, 0.5) * 1000,
        "p95_ms": percentile(values, 0.95) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "max_ms": max(values) * 1000,
    }
