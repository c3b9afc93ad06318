"""`rtmh bench detect`: how long an error burst takes to become a committed incident (issue 4).

One run, on one set of servers (embedded unless POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS are set):

1. A fresh migrated database where only ``high_error_rate`` is enabled (its threshold, min_count
   and recovery threshold as shipped; resolve period shortened so a service can burst again), fresh
   topics, and the real worker (``rtmh worker``: windows in the ingest transaction, the rules
   engine on its thread) in a process of its own, with the default windows unless
   RTMH_WINDOW_SIZE_S / RTMH_WINDOW_SLIDE_S say otherwise.
2. Steady background traffic at ``--rate`` messages/s over ``--services`` services: per request
   one log line (``--base-errors`` of them errors, 0.5 % by default) and one latency sample,
   like ``rtmh simulate``.
3. ``--bursts`` error bursts, one after the other, each on the next service in turn: for
   BURST_SECONDS the service's log lines are errors with probability ``--burst-errors``, at
   ``--burst-factor`` times its normal log rate. Gaps between bursts are random, so bursts start
   at every phase of the window slide (that phase decides how much data the newest window holds).
4. Two clocks per burst, both on this machine's wall clock (PostgreSQL runs here too):
   - **first burst error -> incident committed**: from ``time.time()`` just before the first error
     line of the burst was handed to the producer, to the moment the incident's commit became
     visible (its outbox row's NOTIFY, delivered at commit, wakes a LISTENing connection here;
     a 20 ms poll is the fallback).
   - **condition true -> incident committed** (the hub's own delay): from the produce time of the
     burst line after which the rule's condition held, computed here from every line produced
     exactly as the engine judges it (newest window of that service holding at least min_count
     lines; its error_rate above the threshold), to the same commit.
   Their difference (first error -> condition true) is a property of the traffic and the rule,
   not of the hub: a 50 % burst at the service's normal rate needs up to one slide's worth of
   data before the newest window crosses 5 %.
   The hub's delay is split into stages from timestamps PostgreSQL and the engine record: the
   trigger line's ingest transaction (raw_events.created_at), the evaluation that fired
   (incident_events.details.evaluated_at), the incident transaction's start (its created_at).

Incidents opened on a service with no burst in progress are counted as unexpected opens (noise
of thin windows, or flapping after a burst) and listed in the JSON; a burst that starts while its
service already has a live incident cannot open one and is reported as masked, not as missed.
The JSON's ``diagnostics`` hold what explains the figures: the worker's ingest transactions over
the measured span (size, spacing, age of their oldest and newest message) and per-table write
and autovacuum counts; ``background`` has the rates, the lag and the CPU each part of the run used.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import msgspec
import psutil
import psycopg
import typer
from rich.console import Console
from rich.table import Table

from rtmh.bench.common import (
    BenchServers,
    Databases,
    bench_servers,
    cli_settings,
    figures_table,
    machine_info,
    now_iso,
    postgres_info,
    progress_bar,
    worker_env,
    write_json,
)
from rtmh.config import Settings
from rtmh.embedded.process import child_setup
from rtmh.windows.assign import pane_start

#: the rule the bursts must trip, as shipped in 002_sample_data.sql
RULE = "high_error_rate"
#: resolve period during the run: short, so a service can burst again (a reopen) in long runs
RESOLVE_AFTER_SECONDS = 5
#: a service's bursts are at least this far apart (clear within one slide + resolve period)
SAME_SERVICE_GAP_S = 40.0
BURST_SECONDS = 3.0
#: random pause between one burst's end and the next one's start
GAP_RANGE_S = (1.0, 2.5)
#: background traffic before the first burst (worker in steady state, windows filled)
WARMUP_S = 12.0
#: after the last burst, background goes on until every burst is detected or this passes
TAIL_S = 15.0
#: after the traffic stops, the worker gets this long to commit everything produced
DRAIN_TIMEOUT_S = 60.0
BASE_ERROR_RATIO = 0.005
TICK_S = 0.01
POLL_S = 0.02
SEED = 20_240_601
TARGET_P99_S = 1.0

SERVICE_NAMES = (
    "checkout", "payments", "search", "auth", "inventory", "cart", "catalog", "shipping",
    "billing", "pricing", "reviews", "orders", "users", "notify", "media", "gateway",
    "ledger", "fraud", "tax", "promo",
)  # fmt: skip
PATHS = ("/api/v1/cart", "/api/v1/items", "/api/v1/pay", "/api/v1/login", "/healthz")
ERROR_MESSAGES = (
    "upstream timed out after 3000 ms",
    "connection reset by peer",
    "database deadlock detected, transaction rolled back",
    "payment gateway returned 502",
)
OK_MESSAGES = tuple(f"{verb} {path} 200" for verb in ("GET", "POST") for path in PATHS)

# --- SQL the benchmark runs (the hub's own statements live in its stages) ------------------------

CONFIGURE_RULES = """
UPDATE alert_rules SET enabled = (name = %(rule)s);
"""
CONFIGURE_RULE = """
UPDATE alert_rules SET resolve_after_seconds = %(resolve)s, channels = '{demo-webhook}'
WHERE name = %(rule)s
RETURNING id, metric_type, aggregation, condition, threshold, recovery_threshold, min_count,
          for_seconds, resolve_after_seconds, window_key_pattern, channels
"""
COMMITTED = """
SELECT coalesce(sum(next_offset), 0)::bigint FROM consumer_offsets WHERE group_id = %s
"""
NEW_INCIDENT_EVENTS = """
SELECT e.id, i.window_key, e.event_type, extract(epoch FROM e.created_at)::float8,
       e.details, i.id::text
FROM incident_events AS e JOIN incidents AS i ON i.id = e.incident_id
WHERE e.id > %s AND e.event_type IN ('opened', 'reopened', 'resolved') AND i.rule_id = %s
ORDER BY e.id
"""
INGESTED_AT = """
SELECT extract(epoch FROM created_at)::float8 FROM raw_events
WHERE service = %s AND event_time BETWEEN to_timestamp(%s) AND to_timestamp(%s)
  AND data->>'request_id' = %s
LIMIT 1
"""

#: one row per ingest transaction (raw_events.created_at is its start): size and message ages
BATCHES = """
SELECT extract(epoch FROM created_at)::float8, count(*)::bigint,
       extract(epoch FROM min(event_time))::float8, extract(epoch FROM max(event_time))::float8
FROM raw_events
WHERE created_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)
GROUP BY created_at ORDER BY created_at
"""
TABLE_STATS = """
SELECT relname, n_tup_ins, n_tup_upd, n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,
       extract(epoch FROM last_autovacuum)::float8, extract(epoch FROM last_autoanalyze)::float8
FROM pg_stat_user_tables
WHERE relname LIKE 'raw_events%%' OR relname IN ('metrics_agg', 'incidents', 'incident_events')
ORDER BY relname
"""

_encode = msgspec.json.Encoder().encode


# --- what one run is made of ---------------------------------------------------------------------


@dataclass(frozen=True)
class DetectConfig:
    bursts: int = 20
    rate: float = 10_000.0
    services: int = 20
    burst_errors: float = 0.5
    burst_factor: float = 1.0
    base_errors: float = BASE_ERROR_RATIO
    burst_seconds: float = BURST_SECONDS
    warmup_s: float = WARMUP_S
    tail_s: float = TAIL_S
    seed: int = SEED

    def service_names(self) -> list[str]:
        names = list(SERVICE_NAMES[: self.services])
        names += [f"svc{i:03d}" for i in range(len(names), self.services)]
        return names


@dataclass(frozen=True)
class RuleParams:
    id: int
    threshold: float
    min_count: int
    recovery_threshold: float | None
    resolve_after_seconds: int
    channels: list[str]


@dataclass
class Burst:
    index: int
    service: str
    service_index: int
    #: planned start/end, seconds since the traffic began
    start: float
    end: float
    started_at: float | None = None
    first_error_at: float | None = None
    first_error_request: str | None = None
    first_error_ts: float | None = None
    trigger_at: float | None = None
    trigger_request: str | None = None
    trigger_ts: float | None = None
    #: the window judged at the trigger line: start, lines, errors
    trigger_window: tuple[int, int, int] | None = None
    lines: int = 0
    errors: int = 0
    ended_at: float | None = None
    live_at_start: bool = False
    # filled from the incident watcher and PostgreSQL afterwards
    detected: bool = False
    event_type: str | None = None
    incident_id: str | None = None
    committed_at: float | None = None
    seen_via: str | None = None
    incident_txn_at: float | None = None
    evaluated_at: float | None = None
    fired_window: dict[str, Any] | None = None
    trigger_ingest_txn_at: float | None = None
    first_error_ingest_txn_at: float | None = None


@dataclass
class IncidentEvent:
    id: int
    service: str
    event_type: str
    created_at: float
    seen_at: float
    via: str
    incident_id: str
    evaluated_at: float | None
    window: dict[str, Any]
    burst: int | None = None


# --- the incident watcher ------------------------------------------------------------------------


class Watcher(threading.Thread):
    """LISTENs for the outbox NOTIFY (sent at commit) and polls as a fallback; records when each
    opened/reopened/resolved timeline row of the rule became visible. Also samples lag."""

    def __init__(self, url: str, rule_id: int, group: str, produced: Callable[[], int]):
        super().__init__(name="bench-detect-watcher", daemon=True)
        self.url = url
        self.rule_id = rule_id
        self.group = group
        self.produced = produced
        self.events: list[IncidentEvent] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.committed = 0
        self.max_lag = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _loop(self) -> None:
        last_id = 0
        next_lag = 0.0
        with (
            psycopg.connect(self.url, autocommit=True) as listen,
            psycopg.connect(self.url, autocommit=True) as query,
        ):
            listen.execute("LISTEN rtmh_notifications")
            while not self.stop_event.is_set():
                woke: float | None = None
                for _ in listen.notifies(timeout=POLL_S, stop_after=1):
                    woke = time.time()
                rows = query.execute(NEW_INCIDENT_EVENTS, (last_id, self.rule_id)).fetchall()
                seen = woke if woke is not None else time.time()
                fresh: list[IncidentEvent] = []
                for event_id, service, kind, created, details, incident in rows:
                    last_id = max(last_id, int(event_id))
                    d: dict[str, Any] = details or {}
                    fresh.append(
                        IncidentEvent(
                            id=int(event_id),
                            service=str(service),
                            event_type=str(kind),
                            created_at=float(created),
                            seen_at=seen,
                            via="notify" if woke is not None else "poll",
                            incident_id=str(incident),
                            evaluated_at=_float(d.get("evaluated_at")),
                            window={
                                k: d.get(k)
                                for k in ("window_start", "window_end", "count", "sum", "value")
                            },
                        )
                    )
                if fresh:
                    with self.lock:
                        self.events.extend(fresh)
                now = time.monotonic()
                if now >= next_lag:
                    next_lag = now + 0.5
                    produced = self.produced()
                    row = query.execute(COMMITTED, (self.group,)).fetchone()
                    self.committed = int(row[0]) if row else 0
                    self.max_lag = max(self.max_lag, produced - self.committed)

    def snapshot(self) -> list[IncidentEvent]:
        with self.lock:
            return list(self.events)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


# --- the traffic ---------------------------------------------------------------------------------


class Traffic:
    """Paced background traffic with the bursts; knows every log line it produced per pane, so
    it can tell at which line of a burst the rule's condition became true."""

    def __init__(
        self,
        config: DetectConfig,
        topics: dict[str, str],
        producer: Any,
        rule: RuleParams,
        size: int,
        slide: int,
        bursts: list[Burst],
    ):
        self.config = config
        self.topics = topics
        self.producer = producer
        self.rule = rule
        self.size = size
        self.slide = slide
        self.bursts = bursts
        self.names = config.service_names()
        self.hosts = [[f"{s}-{i}" for i in range(1, 4)] for s in self.names]
        self.rng = random.Random(config.seed)
        #: pane start -> per service [lines, errors]
        self.panes: dict[int, list[list[int]]] = {}
        self.produced = 0
        self.failed = 0
        self.requests = 0
        self.first_error_note: str | None = None
        self.started_wall = 0.0

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            self.first_error_note = self.first_error_note or str(err)

    def _produce(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                self.produced += 1
                return
            except BufferError:
                self.producer.poll(0.05)

    def _pane(self, pane: int) -> list[list[int]]:
        counts = self.panes.get(pane)
        if counts is None:
            counts = [[0, 0] for _ in self.names]
            self.panes[pane] = counts
        return counts

    def condition(self, service: int, pane: int) -> tuple[bool, tuple[int, int, int]] | None:
        """The rule's verdict on ``service`` right now, as the engine judges the newest windows:
        the newest window holding at least min_count lines decides; None without one."""
        lines = errors = 0
        for start in range(pane, pane - self.size, -self.slide):
            counts = self.panes.get(start)
            if counts is not None:
                lines += counts[service][0]
                errors += counts[service][1]
            if lines >= self.rule.min_count and lines > 0:
                return errors / lines > self.rule.threshold, (start, lines, errors)
        return None

    def burst_at(self, t: float) -> Burst | None:
        for b in self.bursts:
            if b.start <= t < b.end:
                return b
            if b.start > t:
                return None
        return None

    def log_line(
        self, si: int, wall: float, counts: list[int], ratio: float, burst: Burst | None, pane: int
    ) -> None:
        rng = self.rng
        self.requests += 1
        request = f"{self.requests:012x}"
        error = rng.random() < ratio
        if error:
            level, text = "error", rng.choice(ERROR_MESSAGES)
        else:
            level = "warn" if rng.random() < 0.02 else "info"
            text = rng.choice(OK_MESSAGES)
        service = self.names[si]
        value = _encode(
            {
                "ts": wall,
                "service": service,
                "host": rng.choice(self.hosts[si]),
                "level": level,
                "msg": text,
                "request_id": request,
            }
        )
        at = time.time()
        self._produce(self.topics["logs"], service.encode(), value)
        counts[0] += 1
        counts[1] += error
        if burst is None:
            return
        burst.lines += 1
        burst.errors += error
        if burst.started_at is None:
            burst.started_at = at
        if error and burst.first_error_at is None:
            burst.first_error_at, burst.first_error_request, burst.first_error_ts = (
                at,
                request,
                wall,
            )
        if burst.first_error_at is not None and burst.trigger_at is None:
            verdict = self.condition(si, pane)
            if verdict is not None and verdict[0]:
                burst.trigger_at, burst.trigger_request, burst.trigger_ts = at, request, wall
                burst.trigger_window = verdict[1]

    def latency_sample(self, si: int, wall: float) -> None:
        rng = self.rng
        service = self.names[si]
        value = _encode(
            {
                "ts": wall,
                "service": service,
                "host": rng.choice(self.hosts[si]),
                "name": "http_request_duration_ms",
                "value": round(rng.lognormvariate(3.6, 0.5), 3),
                "labels": {"path": rng.choice(PATHS)},
            }
        )
        self._produce(self.topics["metrics"], service.encode(), value)

    def run(
        self,
        until: Callable[[float], bool],
        on_tick: Callable[[float], None],
    ) -> float:
        """Produce until ``until(t)``; returns the seconds it ran."""
        c = self.config
        per_request_rate = c.rate / 2  # a log line and a latency sample per request
        extra_rate = per_request_rate / c.services * (c.burst_factor - 1)
        rng = self.rng
        n = len(self.names)
        started = time.monotonic()
        self.started_wall = time.time()
        sent = 0
        extra_sent = 0.0
        burst_begun: float | None = None
        next_ui = 0.0
        while True:
            t = time.monotonic() - started
            if until(t):
                break
            wall = time.time()
            pane = pane_start(wall, self.slide)
            counts = self._pane(pane)
            burst = self.burst_at(t)
            bsi = burst.service_index if burst is not None else -1
            due = int(per_request_rate * t) - sent
            for _ in range(max(0, due)):
                si = rng.randrange(n)
                in_burst = burst if si == bsi else None
                ratio = c.burst_errors if in_burst is not None else c.base_errors
                self.log_line(si, wall, counts[si], ratio, in_burst, pane)
                self.latency_sample(si, wall)
            sent += max(0, due)
            if burst is not None and extra_rate > 0:
                if burst_begun is None:
                    burst_begun, extra_sent = t, 0.0
                extra = int(extra_rate * (t - burst_begun) - extra_sent)
                for _ in range(max(0, extra)):
                    self.log_line(bsi, wall, counts[bsi], c.burst_errors, burst, pane)
                extra_sent += max(0, extra)
            elif burst is None:
                burst_begun = None
            for b in self.bursts:
                if b.ended_at is None and b.started_at is not None and t >= b.end:
                    b.ended_at = time.time()
            self.producer.poll(0)
            if t >= next_ui:
                next_ui = t + 0.25
                on_tick(t)
            time.sleep(max(0.0, TICK_S - (time.monotonic() - started - t)))
        return time.monotonic() - started


# --- schedule and statistics ---------------------------------------------------------------------


def schedule(config: DetectConfig) -> list[Burst]:
    """Bursts one after the other with random gaps; each service again only after
    SAME_SERVICE_GAP_S, so its previous incident has resolved (a repeat is a reopen)."""
    rng = random.Random(config.seed + 1)
    names = config.service_names()
    bursts: list[Burst] = []
    t = config.warmup_s
    last_end: dict[int, float] = {}
    for i in range(config.bursts):
        si = i % config.services
        start = max(t, last_end.get(si, -math.inf) + SAME_SERVICE_GAP_S)
        end = start + config.burst_seconds
        bursts.append(Burst(i, names[si], si, start, end))
        last_end[si] = end
        t = end + rng.uniform(*GAP_RANGE_S)
    return bursts


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float | int] | None:
    """n, min, p50, p95, p99, max, mean in seconds; None without values."""
    if not values:
        return None
    return {
        "n": len(values),
        "min": min(values),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


def _diffs(bursts: Sequence[Burst], late: str, early: str) -> list[float]:
    out: list[float] = []
    for b in bursts:
        a, z = getattr(b, early), getattr(b, late)
        if b.detected and a is not None and z is not None:
            out.append(z - a)
    return out


STAGES = (
    ("first_error_to_commit", "first burst error -> incident committed", "committed_at",
     "first_error_at"),
    ("trigger_to_commit", "condition true -> incident committed (hub)", "committed_at",
     "trigger_at"),
    ("first_error_to_trigger", "first burst error -> condition true (traffic)", "trigger_at",
     "first_error_at"),
    ("trigger_to_ingest_txn", "  condition-true line -> its ingest transaction",
     "trigger_ingest_txn_at", "trigger_at"),
    ("ingest_txn_to_evaluation", "  ingest transaction -> evaluation that fired", "evaluated_at",
     "trigger_ingest_txn_at"),
    ("evaluation_to_incident_txn", "  evaluation -> incident transaction", "incident_txn_at",
     "evaluated_at"),
    ("incident_txn_to_commit", "  incident transaction -> committed", "committed_at",
     "incident_txn_at"),
)  # fmt: skip


# --- the run -------------------------------------------------------------------------------------


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    """Best effort: leave nothing behind on a broker the user brought."""
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):
        futures = AdminClient({"bootstrap.servers": bootstrap}).delete_topics(
            topics, operation_timeout=10
        )
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _committed(url: str, group: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(COMMITTED, (group,)).fetchone()
    return int(row[0]) if row else 0


def _configure(url: str) -> RuleParams:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CONFIGURE_RULES, {"rule": RULE})
        row = conn.execute(
            CONFIGURE_RULE, {"rule": RULE, "resolve": RESOLVE_AFTER_SECONDS}
        ).fetchone()
    if row is None:
        raise RuntimeError(f"alert rule {RULE!r} is missing from the migrated database")
    rid, metric, aggregation, condition, threshold, recovery, min_count, for_s, resolve, _p, ch = (
        row
    )
    if (metric, aggregation, condition, for_s) != ("error_rate", "value", ">", 0):
        raise RuntimeError(
            f"{RULE} is {metric} {aggregation} {condition} for {for_s} s; this benchmark models "
            "error_rate value > threshold with for 0 s"
        )
    return RuleParams(
        int(rid),
        float(threshold),
        int(min_count),
        None if recovery is None else float(recovery),
        int(resolve),
        list(ch),
    )


class CpuMeter:
    """CPU time of each part of the run over the measured span: the worker, the embedded broker
    and PostgreSQL (children of this process, when embedded) and this process (producer and
    watcher). On a small machine they share the cores, which decides the latencies."""

    def __init__(self, worker_pid: int):
        self.worker_pid = worker_pid
        self.start: dict[str, float] = {}
        self.started = 0.0

    def _parts(self) -> dict[str, list[psutil.Process]]:
        me = psutil.Process()
        parts: dict[str, list[psutil.Process]] = {"benchmark (producer, watcher)": [me]}
        for child in me.children():
            try:
                exe = Path((child.cmdline() or [""])[0]).name
            except psutil.Error:
                continue
            if child.pid == self.worker_pid:
                parts["worker"] = [child]
            elif exe.startswith("tansu"):
                parts["embedded broker"] = [child]
            elif exe == "postgres":
                parts["embedded PostgreSQL"] = [child, *child.children()]
        return parts

    def _snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self._parts().items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
                    if name == "embedded PostgreSQL":  # exited backends, reaped by postmaster
                        total += t.children_user + t.children_system
            out[name] = total
        return out

    def begin(self) -> None:
        self.start, self.started = self._snapshot(), time.monotonic()

    def end(self) -> dict[str, float]:
        """Percent of one core per part since ``begin``."""
        if not self.start:
            return {}
        now, span = self._snapshot(), time.monotonic() - self.started
        return {
            name: round((now[name] - self.start.get(name, 0.0)) / span * 100, 1)
            for name in now
            if span > 0
        }


class WorkerProcess:
    """`python -m rtmh.cli worker` with its settings in the environment, like a deployment."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rtmh.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # its own session: Ctrl-C reaches the benchmark, which stops it in order
                start_new_session=True,
                preexec_fn=child_setup(signal.SIGTERM),
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(
                f"the worker exited with {self.proc.returncode}; log tail:\n{_tail(self.log_path)}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class DetectBench:
    settings: Settings
    config: DetectConfig
    console: Console
    started_at: str = field(default_factory=now_iso)
    cpu_percent: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def run(self) -> dict[str, Any]:
        s = self.settings
        with bench_servers(s.postgres_url, s.kafka_bootstrap_servers, console=self.console) as srv:
            dbs = Databases(srv.admin_url)
            try:
                return self._run(srv, dbs)
            finally:
                dbs.drop_all()

    def _run(self, srv: BenchServers, dbs: Databases) -> dict[str, Any]:
        from rtmh.kafka.client import ensure_topics, make_producer

        s, c = self.settings, self.config
        size, slide = s.window_size_s, s.window_slide_s
        url = dbs.fresh("detect")
        rule = _configure(url)
        prefix = f"benchdetect{uuid.uuid4().hex[:8]}."
        group = f"rtmh-bench-detect-{uuid.uuid4().hex[:8]}"
        topics = {k: f"{prefix}{k}" for k in ("logs", "metrics", "events")}
        ensure_topics(srv.bootstrap, list(topics.values()), s.partitions)
        bursts = schedule(c)
        producer = make_producer(srv.bootstrap)
        traffic = Traffic(c, topics, producer, rule, size, slide, bursts)
        worker = WorkerProcess(
            worker_env(s, url, srv.bootstrap, prefix, group), srv.workdir / "worker.log"
        )
        watcher = Watcher(url, rule.id, group, lambda: traffic.produced)
        switch = sys.getswitchinterval()
        load_before = os.getloadavg()
        try:
            join_s = self._wait_for_worker(worker, traffic, url, group)
            sys.setswitchinterval(0.001)  # the watcher's clock must not wait for the producer
            watcher.start()
            ran, window = self._traffic(traffic, watcher, worker, CpuMeter(worker.proc.pid))
            remaining = producer.flush(30)
            if remaining or traffic.failed:
                raise RuntimeError(
                    f"{remaining} messages undelivered, {traffic.failed} failed "
                    f"({traffic.first_error_note or 'timed out'})"
                )
            drain_s = self._drain(worker, url, group, traffic.produced)
            time.sleep(0.2)
            watcher.stop()
            if watcher.error is not None:
                raise RuntimeError(f"incident watcher failed: {watcher.error}")
        finally:
            sys.setswitchinterval(switch)
            watcher.stop_event.set()
            worker.stop()
            with contextlib.suppress(Exception):
                producer.flush(2)
            if not srv.embedded_broker:
                _delete_topics(srv.bootstrap, list(topics.values()))
        load_after = os.getloadavg()
        events = watcher.snapshot()
        unexpected = self._match(bursts, events)
        self._ingest_times(url, bursts)
        self.diagnostics = _diagnostics(url, traffic.started_wall, window)
        return self._result(
            srv,
            url,
            rule,
            bursts,
            unexpected,
            traffic,
            ran=ran,
            window=window,
            join_s=join_s,
            drain_s=drain_s,
            max_lag=watcher.max_lag,
            load=(load_before, load_after),
        )

    def _wait_for_worker(
        self, worker: WorkerProcess, traffic: Traffic, url: str, group: str
    ) -> float:
        """Until the worker has committed a first message (group joined, partitions assigned)."""
        started = time.monotonic()
        with self.console.status("starting the worker and waiting for its first commit"):
            wall = time.time()
            counts = traffic._pane(pane_start(wall, traffic.slide))
            traffic.log_line(0, wall, counts[0], 0.0, None, pane_start(wall, traffic.slide))
            traffic.producer.flush(10)
            while _committed(url, group) < traffic.produced:
                worker.check()
                if time.monotonic() - started > 90:
                    raise RuntimeError(
                        "the worker committed nothing within 90 s; log tail:\n"
                        + _tail(worker.log_path)
                    )
                time.sleep(0.1)
        return time.monotonic() - started

    def _traffic(
        self, traffic: Traffic, watcher: Watcher, worker: WorkerProcess, cpu: CpuMeter
    ) -> tuple[float, dict[str, float]]:
        """Runs the traffic with a progress bar; returns its seconds and the measurement window
        (produced/committed counts at the first burst and at the end)."""
        c = self.config
        bursts = traffic.bursts
        last_end = bursts[-1].end
        window: dict[str, float] = {}
        with progress_bar(self.console) as progress:
            task = progress.add_task("bursts detected", total=len(bursts), note="warming up")

            def detected() -> int:
                self._match(bursts, watcher.snapshot())
                return sum(b.detected for b in bursts)

            def until(t: float) -> bool:
                if "t0" not in window and t >= c.warmup_s:
                    window.update(t0=t, produced0=traffic.produced, committed0=watcher.committed)
                    cpu.begin()
                if t < last_end:
                    return False
                return t >= last_end + c.tail_s or detected() == len(bursts)

            def on_tick(t: float) -> None:
                worker.check()
                if watcher.error is not None:
                    raise RuntimeError(f"incident watcher failed: {watcher.error}")
                current = traffic.burst_at(t)
                where = f"burst {current.index + 1} on {current.service}" if current else ""
                lag = traffic.produced - watcher.committed
                progress.update(
                    task,
                    completed=detected(),
                    note=f"{t:5.0f} s  {traffic.produced:>9,} sent  lag {lag:>7,}  {where}",
                )

            ran = traffic.run(until, on_tick)
            window.update(t1=ran, produced1=traffic.produced, committed1=watcher.committed)
            self.cpu_percent = cpu.end()
            progress.update(task, completed=detected(), note=f"{ran:.0f} s, traffic stopped")
        return ran, window

    def _drain(self, worker: WorkerProcess, url: str, group: str, produced: int) -> float:
        started = time.monotonic()
        with self.console.status("waiting for the worker to commit everything produced"):
            while _committed(url, group) < produced:
                worker.check()
                if time.monotonic() - started > DRAIN_TIMEOUT_S:
                    raise RuntimeError(
                        f"the worker did not catch up within {DRAIN_TIMEOUT_S:.0f} s after the "
                        "traffic stopped"
                    )
                time.sleep(0.05)
        return time.monotonic() - started

    @staticmethod
    def _match(bursts: list[Burst], events: list[IncidentEvent]) -> list[IncidentEvent]:
        """Each burst's detection is the first opened/reopened row of its service committed after
        the burst began; rows matching no burst are returned (unexpected opens)."""
        for ev in events:
            ev.burst = None
        for b in bursts:
            b.detected = False
            if b.started_at is None:
                continue
            live = False
            for ev in events:
                if ev.service != b.service:
                    continue
                if ev.created_at < b.started_at:
                    live = ev.event_type != "resolved"
                    continue
                if ev.event_type == "resolved" or ev.burst is not None:
                    continue
                ev.burst = b.index
                b.detected = True
                b.event_type = ev.event_type
                b.incident_id = ev.incident_id
                b.committed_at = ev.seen_at
                b.seen_via = ev.via
                b.incident_txn_at = ev.created_at
                b.evaluated_at = ev.evaluated_at
                b.fired_window = ev.window
                break
            b.live_at_start = live
        return [e for e in events if e.burst is None and e.event_type != "resolved"]

    @staticmethod
    def _ingest_times(url: str, bursts: list[Burst]) -> None:
        """raw_events.created_at (the ingest transaction's start) of each burst's key lines."""
        with psycopg.connect(url, autocommit=True) as conn:
            for b in bursts:
                for request, ts, attr in (
                    (b.trigger_request, b.trigger_ts, "trigger_ingest_txn_at"),
                    (b.first_error_request, b.first_error_ts, "first_error_ingest_txn_at"),
                ):
                    if request is None or ts is None:
                        continue
                    row = conn.execute(
                        INGESTED_AT, (b.service, ts - 0.01, ts + 0.01, request)
                    ).fetchone()
                    setattr(b, attr, float(row[0]) if row else None)

    def _result(
        self,
        srv: BenchServers,
        url: str,
        rule: RuleParams,
        bursts: list[Burst],
        unexpected: list[IncidentEvent],
        traffic: Traffic,
        *,
        ran: float,
        window: dict[str, float],
        join_s: float,
        drain_s: float,
        max_lag: int,
        load: tuple[tuple[float, float, float], tuple[float, float, float]],
    ) -> dict[str, Any]:
        s, c = self.settings, self.config
        latencies = {key: summary(_diffs(bursts, late, early)) for key, _, late, early in STAGES}
        span = window.get("t1", ran) - window.get("t0", 0.0)
        produced = window.get("produced1", 0) - window.get("produced0", 0)
        committed = window.get("committed1", 0) - window.get("committed0", 0)
        detected = [b for b in bursts if b.detected]
        masked = [b.index for b in bursts if not b.detected and b.live_at_start]
        missed = [b.index for b in bursts if not b.detected and not b.live_at_start]
        first = latencies["first_error_to_commit"]
        hub = latencies["trigger_to_commit"]
        command = f"rtmh bench detect --bursts {c.bursts} --rate {c.rate:g}"
        for flag, value, default in (
            ("--services", c.services, 20),
            ("--burst-errors", c.burst_errors, 0.5),
            ("--burst-factor", c.burst_factor, 1.0),
            ("--base-errors", c.base_errors, BASE_ERROR_RATIO),
        ):
            if value != default:
                command += f" {flag} {value:g}"
        return {
            "benchmark": "detect",
            "started_at": self.started_at,
            "finished_at": now_iso(),
            "command": command,
            "machine": {
                **machine_info(),
                "load_average_before": [round(x, 2) for x in load[0]],
                "load_average_after": [round(x, 2) for x in load[1]],
            },
            "servers": srv.describe(),
            "postgres": {
                **postgres_info(url),
                "mode": "embedded, the defaults of `rtmh up` (durable: fsync and "
                "synchronous_commit on)"
                if srv.embedded_postgres
                else "external (POSTGRES_URL)",
            },
            "config": {
                "bursts": c.bursts,
                "rate_msgs_per_s": c.rate,
                "services": c.services,
                "per_service_log_lines_per_s": c.rate / 2 / c.services,
                "base_error_ratio": c.base_errors,
                "burst_error_ratio": c.burst_errors,
                "burst_rate_factor": c.burst_factor,
                "burst_seconds": c.burst_seconds,
                "gap_between_bursts_s": list(GAP_RANGE_S),
                "warmup_s": c.warmup_s,
                "window_size_s": s.window_size_s,
                "window_slide_s": s.window_slide_s,
                "batch_max_ms": s.batch_max_ms,
                "batch_max_messages": s.batch_max_messages,
                "partitions": s.partitions,
                "worker": "subprocess `python -m rtmh.cli worker`",
                "rule": {"name": RULE, **asdict(rule)},
                "commit_clock": "NOTIFY of the incident's outbox row (delivered at commit) "
                f"received by a LISTENing connection; {POLL_S * 1000:.0f} ms poll as fallback",
            },
            "background": {
                "seconds": ran,
                "produced": traffic.produced,
                "measured_span_s": span,
                "produced_per_s": produced / span if span > 0 else None,
                "committed_per_s": committed / span if span > 0 else None,
                "max_lag_messages": max_lag,
                "drain_after_stop_s": drain_s,
                "worker_join_s": join_s,
                "cpu_percent_of_one_core": self.cpu_percent,
            },
            "latency_s": latencies,
            "detected": len(detected),
            "missed": missed,
            "masked_by_live_incident": masked,
            "unexpected_opens": [asdict(e) for e in unexpected],
            "traffic_started_at": traffic.started_wall,
            "bursts": [_burst_json(b) for b in bursts],
            "diagnostics": self.diagnostics,
            "targets": {"first_error_to_commit_p99_max_s": TARGET_P99_S},
            "targets_met": {
                "first_error_to_commit_p99": first is not None
                and first["p99"] < TARGET_P99_S
                and not missed,
                "trigger_to_commit_p99": hub is not None
                and hub["p99"] < TARGET_P99_S
                and not missed,
            },
        }


def _diagnostics(url: str, started_wall: float, window: dict[str, float]) -> dict[str, Any]:
    """What explains the figures: the worker's ingest transactions over the measured span (from
    raw_events.created_at, each transaction's start) and autovacuum activity."""
    t0, t1 = started_wall + window.get("t0", 0.0), started_wall + window.get("t1", 0.0)
    with psycopg.connect(url, autocommit=True) as conn:
        batches = conn.execute(BATCHES, (t0, t1)).fetchall()
        tables = conn.execute(TABLE_STATS).fetchall()
    starts = [float(b[0]) for b in batches]
    return {
        "ingest_transactions": {
            "n": len(batches),
            "messages": summary([float(b[1]) for b in batches]),
            "interval_s": summary([b - a for a, b in pairwise(starts)]),
            "oldest_message_age_at_start_s": summary([float(b[0] - b[2]) for b in batches]),
            "newest_message_age_at_start_s": summary([float(b[0] - b[3]) for b in batches]),
            "note": "age = transaction start - the message's ts (its produce time, 10 ms ticks)",
        },
        "tables": [
            {
                "table": name,
                "inserts": inserts,
                "updates": updates,
                "live_rows": live,
                "dead_rows": dead,
                "autovacuums": vacuums,
                "autoanalyzes": analyzes,
                "last_autovacuum_s_into_traffic": None if lv is None else lv - started_wall,
                "last_autoanalyze_s_into_traffic": None if la is None else la - started_wall,
            }
            for name, inserts, updates, live, dead, vacuums, analyzes, lv, la in tables
        ],
    }


def _burst_json(b: Burst) -> dict[str, Any]:
    out = asdict(b)
    for key, _, late, early in STAGES:
        a, z = getattr(b, early), getattr(b, late)
        out[key] = None if a is None or z is None else z - a
    return out


def run(settings: Settings, config: DetectConfig, console: Console) -> dict[str, Any]:
    return DetectBench(settings, config, console).run()


# --- output --------------------------------------------------------------------------------------


def _ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def render(result: dict[str, Any]) -> list[Table]:
    c, bg, lat = result["config"], result["background"], result["latency_s"]
    rows: list[list[str]] = []
    for key, label, _, _ in STAGES:
        stats = lat[key]
        if stats is None:
            rows.append([label, "0", "-", "-", "-", "-", "-"])
            continue
        rows.append(
            [
                label,
                str(stats["n"]),
                _ms(stats["min"]),
                _ms(stats["p50"]),
                _ms(stats["p95"]),
                _ms(stats["p99"]),
                _ms(stats["max"]),
            ]
        )
    m, pg = result["machine"], result["postgres"]
    caption = (
        f"{c['bursts']} bursts of {c['burst_error_ratio']:.0%} errors at "
        f"{c['burst_rate_factor']:g}x the service's rate ({c['per_service_log_lines_per_s']:,.0f} "
        f"log lines/s), {c['burst_seconds']:g} s each, over {c['services']} services; "
        f"rule error_rate > {c['rule']['threshold']:g} with min_count {c['rule']['min_count']}; "
        f"windows {c['window_size_s']} s / {c['window_slide_s']} s; batches <= "
        f"{c['batch_max_ms']} ms.\n"
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB; "
        f"load {m['load_average_before'][0]:.2f} -> {m['load_average_after'][0]:.2f}; "
        f"PostgreSQL {pg['version']} ({pg['mode']})"
    )
    latency = figures_table(
        f"rtmh bench detect: {result['detected']}/{c['bursts']} bursts detected "
        f"at {c['rate_msgs_per_s']:,.0f} msg/s background",
        ("latency (ms)", "n", "min", "p50", "p95", "p99", "max"),
        rows,
        caption=caption,
    )

    def rate(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}/s"

    unexpected = result["unexpected_opens"]
    facts = figures_table(
        "run",
        ("", "value"),
        [
            ["background produced", rate(bg["produced_per_s"])],
            ["background committed by the worker", rate(bg["committed_per_s"])],
            ["max lag (messages)", f"{bg['max_lag_messages']:,}"],
            ["drain after the traffic stopped", f"{bg['drain_after_stop_s']:.2f} s"],
            [
                "CPU (% of one core)",
                ", ".join(f"{k} {v:.0f}" for k, v in bg["cpu_percent_of_one_core"].items()),
            ],
            ["missed bursts", ", ".join(map(str, result["missed"])) or "none"],
            [
                "bursts masked by a live incident",
                ", ".join(map(str, result["masked_by_live_incident"])) or "none",
            ],
            [
                "unexpected opens (no burst)",
                f"{len(unexpected)}"
                + (
                    " (" + ", ".join(sorted({e["service"] for e in unexpected})) + ")"
                    if unexpected
                    else ""
                ),
            ],
        ],
    )

    def mark(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    first, hub = lat["first_error_to_commit"], lat["trigger_to_commit"]
    met = result["targets_met"]
    targets = figures_table(
        "target (issue 4)",
        ("target", "measured", ""),
        [
            [
                f"first burst error -> incident p99 < {TARGET_P99_S * 1000:.0f} ms",
                _ms(first["p99"] if first else None),
                mark(met["first_error_to_commit_p99"]),
            ],
            [
                f"condition true -> incident p99 < {TARGET_P99_S * 1000:.0f} ms (hub only)",
                _ms(hub["p99"] if hub else None),
                mark(met["trigger_to_commit_p99"]),
            ],
        ],
    )
    return [latency, facts, targets]


def save(result: dict[str, Any], path: Path) -> None:
    write_json(path, result)


# --- the command ---------------------------------------------------------------------------------


def register(bench_app: typer.Typer) -> None:
    """Adds `detect` to the `rtmh bench` sub-app."""

    @bench_app.command("detect")
    def detect(
        ctx: typer.Context,
        bursts: Annotated[
            int, typer.Option("--bursts", min=1, max=1000, help="error bursts to detect")
        ] = 20,
        rate: Annotated[
            float,
            typer.Option("--rate", min=100, help="background messages/s (logs + metrics)"),
        ] = 10_000,
        services: Annotated[
            int,
            typer.Option(
                "--services", min=1, max=1000, help="services sharing the background traffic"
            ),
        ] = 20,
        burst_errors: Annotated[
            float,
            typer.Option(
                "--burst-errors", min=0.06, max=1.0, help="share of error lines during a burst"
            ),
        ] = 0.5,
        burst_factor: Annotated[
            float,
            typer.Option(
                "--burst-factor",
                min=1.0,
                max=100.0,
                help="a bursting service logs at this multiple of its normal rate",
            ),
        ] = 1.0,
        base_errors: Annotated[
            float,
            typer.Option(
                "--base-errors", min=0.0, max=0.05, help="share of error lines in the background"
            ),
        ] = BASE_ERROR_RATIO,
        json_file: Annotated[
            Path | None, typer.Option("--json", help="also write every figure to this JSON file")
        ] = None,
    ) -> None:
        """Detection latency (issue 4): first error of a burst -> incident committed, and the
        line that made the rule's condition true -> incident committed, with steady background
        traffic.

        Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set (it creates and drops its own
        database and topics there), else embedded servers in a temporary directory."""
        out, err = Console(), Console(stderr=True)
        settings = cli_settings(ctx, err)
        config = DetectConfig(
            bursts=bursts,
            rate=rate,
            services=services,
            burst_errors=burst_errors,
            burst_factor=burst_factor,
            base_errors=base_errors,
        )
        try:
            result = run(settings, config, err)
        except KeyboardInterrupt:
            err.print("interrupted: worker stopped, databases and embedded servers removed")
            raise typer.Exit(130) from None
        except RuntimeError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
        for table in render(result):
            out.print(table)
        if json_file is not None:
            save(result, json_file)
            out.print(f"figures written to {json_file}")


__all__ = ["DetectConfig", "percentile", "register", "render", "run", "schedule", "summary"]
