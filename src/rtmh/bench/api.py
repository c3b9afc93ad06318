"""`rtmh bench api`: latency of the REST API's read paths on a large data set (issue: p95 < 50 ms
each with 20 concurrent clients, 10 million raw_events rows and a million metrics_agg rows).

A fresh database on the bench's PostgreSQL (POSTGRES_URL's server, else an embedded one) is
filled by rtmh.bench.api_data; a real `rtmh api` process serves it; a read token is made. Then
each of four requests (rtmh.bench.api_load) is measured on its own, closed-loop: ``clients``
concurrent clients (one asyncio loop, a keep-alive HTTP/1.1 connection each) send it back to
back for ``seconds``, after ``warmup`` seconds of the same load that are not recorded (they
open the API's pool connections and bring the pages into memory, as the first minute of any
real API does):

- ``incident_list``: GET /api/v1/incidents, half newest first, a quarter the live ones
  (status=open&status=investigating), a quarter one service's;
- ``incident``: GET /api/v1/incidents/{id}, a random incident (timeline, notifications);
- ``metric_series``: GET /api/v1/metrics/series, a random service and metric type, the last 6 h;
- ``events_search``: GET /api/v1/events, a random service, level=error, the last hour, limit 50.

Beside each client-side distribution, to tell where the time goes:

- server: the API's own rtmh_api_request_seconds histogram, scraped before and after,
  quantiles interpolated within its buckets (auth + query + serialisation, and the waits for
  the event loop that other requests hold; not HTTP parsing or the socket queue);
- 1 client: the same requests one at a time (the latency without a queue);
- service: the same requests through rtmh.service in this process, one at a time on one
  connection (the SQL and the rows, no HTTP, auth or validation), and EXPLAIN (ANALYZE,
  BUFFERS) of the statements of the slowest such call, with its parameters;
- the CPU the API process, PostgreSQL and this client used meanwhile, and the API's CPU per
  request (on a small machine the client competes with the server for the cores).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

import httpx
import psutil
import psycopg
from psycopg import sql
from psycopg.abc import Params as SqlParams
from rich.console import Console
from rich.table import Table

from rtmh.bench import api_data, api_load
from rtmh.bench.common import (
    Databases,
    bench_servers,
    child_env,
    figures_table,
    machine_info,
    now_iso,
    postgres_info,
    process_cpu_seconds,
)
from rtmh.bench.stats import percentile
from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.service.tokens import create_token

TARGET_P95_MS: Final = 50.0
_READY: Final = re.compile(r"API listening on (http://\S+)")
#: the longest `rtmh api` may take to say it listens and then to be ready
START_TIMEOUT_S: Final = 60.0
#: service calls measured for each kind, at most (and at most a quarter of --seconds)
DIRECT_CALLS: Final = 200


class _Recording(psycopg.AsyncCursor[Any]):
    """A cursor that notes each statement it runs with its parameters, so the slowest service
    call's own SQL can be explained with exactly what the service sent."""

    statements: ClassVar[list[tuple[str, SqlParams | None]]] = []

    # one signature for psycopg's overloads (plain query, template): the recording is the same
    async def execute(self, query: Any, params: SqlParams | None = None, **kwargs: Any) -> Self:
        if isinstance(query, str):
            _Recording.statements.append((query, params))
        return await super().execute(query, params, **kwargs)


async def _direct(url: str, kind: str, world: api_load.Universe, seconds: float) -> dict[str, Any]:
    """The service call alone, one at a time on one connection (as the API's pool opens
    them: autocommit, never prepared); then EXPLAIN (ANALYZE, BUFFERS) of the statements of
    the slowest call, with its parameters."""
    rng = random.Random(7)
    durations: list[float] = []
    slowest: list[tuple[str, SqlParams | None]] = []
    deadline = time.perf_counter() + seconds
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, prepare_threshold=None, cursor_factory=_Recording
    ) as conn:
        while len(durations) < DIRECT_CALLS and time.perf_counter() < deadline:
            request = api_load.make_request(kind, world, rng)
            _Recording.statements = []
            started = time.perf_counter()
            await request.direct(conn)
            durations.append(time.perf_counter() - started)
            if durations[-1] >= max(durations):
                slowest = _Recording.statements
        plans = [await _explain(conn, query, params) for query, params in slowest]
    return {
        "calls": len(durations),
        **api_load.quantiles_ms(durations),
        "slowest_call_plans": plans,
    }


async def _explain(
    conn: psycopg.AsyncConnection[Any], query: str, params: SqlParams | None
) -> dict[str, Any]:
    name = _query_name(query)
    if name is None or name.endswith(" search_timeout"):  # a setting: nothing to explain
        return {"query": name or query.split("\n")[0][:80]}
    # the service's own named query (read from the package's files, never from input)
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(sql.SQL(query))
    async with conn.cursor() as cur:
        await cur.execute(explain, params)
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
    return {"query": name, "params": _shown(params), "plan": plan}


def _query_name(query: str) -> str | None:
    for stage in ("incidents", "events", "metrics_api", "tokens"):
        queries = load(stage)
        for name in queries.names():
            if getattr(queries, name) == query:
                return f"{stage}.sql {name}"
    return None


def _shown(params: SqlParams | None) -> Any:
    if isinstance(params, dict):
        return {k: str(v) if v is not None else None for k, v in params.items()}
    if isinstance(params, list | tuple):
        return [str(v) for v in params]
    return None


class ApiProcess:
    """A real `rtmh api` on the bench database, as `rtmh api --port 0` runs for a user."""

    def __init__(self, settings: Settings, url: str, workdir: Path) -> None:
        self.log = workdir / "api.log"
        env = child_env(settings, postgres_url=url, log_level="INFO")
        env["RTMH_DATA_DIR"] = str(workdir / "api-data")
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rtmh.cli", "api", "--port", "0"],
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        self.url = ""

    def wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rtmh api exited: {self.log.read_text(errors='replace')}")
            found = _READY.search(self.log.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                return self.url
            time.sleep(0.1)
        raise RuntimeError(f"rtmh api did not listen in {START_TIMEOUT_S:.0f} s")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text}"
            except httpx.HTTPError as error:
                last = str(error) or type(error).__name__
            time.sleep(0.2)
        # e.g. a migration file added since the bench's database was made from the others
        raise RuntimeError(f"rtmh api was not ready in {START_TIMEOUT_S:.0f} s: /readyz {last}")

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def make_read_token(url: str) -> str:
    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            token, _ = await create_token(conn, "bench-read", "read")
        return token

    return asyncio.run(run())


def _own_cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run(
    settings: Settings,
    events: int,
    windows: int,
    incidents: int,
    clients: int,
    seconds: float,
    warmup: float,
    console: Console,
) -> dict[str, Any]:
    started_at = now_iso()
    load_before = _load_average()
    # PostgreSQL only: this bench has no use for a broker. Embedded, with fsync off: only the
    # generation writes, and reads cost the same either way (the settings are in the result)
    with bench_servers(
        settings.postgres_url, None, console=console, broker=False, fast_unsafe=True
    ) as servers:
        databases = Databases(servers.admin_url)
        try:
            url = databases.fresh("api")
            data = api_data.generate(url, events, windows, incidents, console)
            world = api_load.Universe(
                api_data.incident_ids(url), data.services, data.metric_types, data.span_end
            )
            pg = postgres_info(url)
            api = ApiProcess(settings, url, servers.workdir)
            try:
                with console.status("starting rtmh api"):
                    api.wait_listening()
                    token = make_read_token(url)
                    api.wait_ready()
                requests = asyncio.run(
                    _measure_all(api, token, url, world, clients, seconds, warmup, servers.pids)
                )
            finally:
                api.stop()
        finally:
            databases.drop_all()
    return {
        "benchmark": "api",
        "started_at": started_at,
        "machine": machine_info(),
        "servers": servers.describe(),
        "postgres": pg,
        "load_average": {"before": load_before, "after": _load_average()},
        "workload": {
            **data.as_json(),
            "clients": clients,
            "seconds": seconds,
            "warmup_s": warmup,
        },
        "target_p95_ms": TARGET_P95_MS,
        "requests": requests,
    }


async def _measure_all(
    api: ApiProcess,
    token: str,
    url: str,
    world: api_load.Universe,
    clients: int,
    seconds: float,
    warmup: float,
    pids: dict[str, int],
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    single_s = max(0.5, min(5.0, seconds / 4))
    where = urlsplit(api.url)
    connections = [
        api_load.Connection(
            where.hostname or "127.0.0.1", where.port or 80, {"Authorization": f"Bearer {token}"}
        )
        for _ in range(clients)
    ]
    try:
        async with httpx.AsyncClient(base_url=api.url, timeout=60) as scraper:
            for seed, kind in enumerate(api_load.KINDS):
                if warmup > 0:
                    await api_load.load(connections, kind, world, warmup, seed + 100)
                scraped = (await scraper.get("/metrics")).text
                cpu = (api.cpu_seconds(), _own_cpu_seconds(), _pg_cpu(pids))
                measured = await api_load.load(connections, kind, world, seconds, seed)
                cpu_after = (api.cpu_seconds(), _own_cpu_seconds(), _pg_cpu(pids))
                server = api_load.server_side(
                    scraped, (await scraper.get("/metrics")).text, api_load.ROUTES[kind]
                )
                results[kind] = _figures(measured, server, cpu, cpu_after)
            # the same requests from one client: the latency without the queue that the
            # other clients make in front of the API's single event loop
            for seed, kind in enumerate(api_load.KINDS):
                alone = await api_load.load(connections[:1], kind, world, single_s, seed + 200)
                results[kind]["single_client"] = {
                    "requests": len(alone.latencies_s),
                    **api_load.quantiles_ms(alone.latencies_s),
                }
    finally:
        for connection in connections:
            await connection.close()
    for kind in api_load.KINDS:
        results[kind]["direct"] = await _direct(url, kind, world, max(0.5, seconds / 4))
    return results


def _figures(
    measured: api_load.Load,
    server: dict[str, Any],
    cpu: tuple[float, float, float | None],
    cpu_after: tuple[float, float, float | None],
) -> dict[str, Any]:
    done = len(measured.latencies_s)
    p95 = percentile(measured.latencies_s, 0.95) * 1000 if done else None
    wall = measured.wall_s
    shares = {
        "api": (cpu_after[0] - cpu[0]) / wall * 100,
        "client": (cpu_after[1] - cpu[1]) / wall * 100,
    }
    if cpu[2] is not None and cpu_after[2] is not None:
        shares["postgres"] = (cpu_after[2] - cpu[2]) / wall * 100
    return {
        "requests": done,
        "errors": dict(measured.errors),
        "requests_per_s": done / wall,
        **api_load.quantiles_ms(measured.latencies_s),
        "mean_items": measured.items / done if done else 0,
        # what one request costs the API process (its single event loop serves them all)
        "api_cpu_ms_per_request": (cpu_after[0] - cpu[0]) / done * 1000 if done else None,
        "met": p95 is not None and p95 < TARGET_P95_MS and not measured.errors,
        "server": server,
        "cpu_percent": shares,
    }


def _pg_cpu(pids: dict[str, int]) -> float | None:
    """The embedded PostgreSQL's CPU seconds (its backends included); None for a server
    elsewhere, whose CPU this process cannot see."""
    pid = pids.get("postgres")
    return process_cpu_seconds(pid) if pid is not None else None


def _ms(value: Any) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def render(result: dict[str, Any]) -> list[Table]:
    rows = []
    for kind, r in result["requests"].items():
        server, direct, cpu = r["server"], r["direct"], r["cpu_percent"]
        single = r["single_client"]
        rows.append(
            [
                kind,
                str(r["requests"]),
                f"{r['requests_per_s']:.0f}",
                _ms(r.get("p50_ms")),
                _ms(r.get("p95_ms")),
                _ms(r.get("p99_ms")),
                _ms(r.get("max_ms")),
                "met" if r["met"] else "[bold red]missed[/]",
                f"{_ms(server.get('p50_ms'))} / {_ms(server.get('p95_ms'))}",
                f"{_ms(single.get('p50_ms'))} / {_ms(single.get('p95_ms'))}",
                f"{_ms(direct.get('p50_ms'))} / {_ms(direct.get('p95_ms'))}",
                f"{cpu['api']:.0f} / {cpu.get('postgres', 0):.0f} / {cpu['client']:.0f}",
                _ms(r["api_cpu_ms_per_request"]),
                f"{r['mean_items']:.0f}",
                str(sum(r["errors"].values())),
            ]
        )
    m, w, gen = result["machine"], result["workload"], result["workload"]["generation_s"]
    load = result["load_average"]
    caption = (
        f"{w['raw_events']:,} raw_events, {w['metrics_agg']:,} metrics_agg, "
        f"{w['incidents']:,} incidents ({w['incident_events']:,} timeline rows, "
        f"{w['alert_notifications']:,} notifications), {w['services']} services over "
        f"{w['span_hours']:.0f} h; generated in {w['generation_total_s']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in gen.items())
        + f").\n{w['clients']} concurrent clients, {w['seconds']:.0f} s each after "
        f"{w['warmup_s']:.0f} s of warm-up; target p95 < {result['target_p95_ms']:.0f} ms. "
        "server: the API's own histogram (interpolated in its buckets); 1 client: the same "
        "requests one at a time; service: the service call alone (SQL and rows, no HTTP); "
        "CPU %: api / postgres / this client (100 = one core).\n"
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB; PostgreSQL "
        f"{result['servers']['postgres']}; load average before {load['before']}, after "
        f"{load['after']}"
    )
    return [
        figures_table(
            "rtmh bench api: read latency under concurrent clients (ms)",
            [
                "request",
                "n",
                "req/s",
                "p50",
                "p95",
                "p99",
                "max",
                "p95 < 50",
                "server p50/p95",
                "1 client p50/p95",
                "service p50/p95",
                "CPU %",
                "API CPU/req",
                "rows",
                "errors",
            ],
            rows,
            caption,
        )
    ]


def plans(result: dict[str, Any]) -> list[str]:
    """Each request type's slowest service call: its statements' EXPLAIN (ANALYZE, BUFFERS)."""
    out = []
    for kind, r in result["requests"].items():
        for step in r["direct"].get("slowest_call_plans", []):
            if "plan" in step:
                out.append(f"-- {kind}: {step['query']} {step['params']}\n{step['plan']}\n")
    return out
