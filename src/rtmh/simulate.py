"""`rtmh simulate`: realistic producer traffic for the topics, and the scripted stories of the demo.

Several services on several hosts handle requests: each request is a log line (level by the
service's current error ratio) and a latency sample; every host reports CPU and memory gauges each
second; deploys and restarts are events. A scenario is a list of phases that change one service's
behaviour for a while, so a burst or a spike is visible against steady traffic.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

SERVICES = ("checkout", "payments", "search", "auth", "inventory")
PATHS = ("/api/v1/cart", "/api/v1/items", "/api/v1/pay", "/api/v1/login", "/healthz")
ERROR_MESSAGES = (
    "upstream timed out after 3000 ms",
    "connection reset by peer",
    "database deadlock detected, transaction rolled back",
    "payment gateway returned 502",
)

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Phase:
    """For ``start <= t < end`` (seconds since the run began) ``service`` behaves differently."""

    start: float
    end: float
    service: str
    error_ratio: float | None = None
    latency_factor: float | None = None


@dataclass(frozen=True, slots=True)
class OneOff:
    """An event emitted once at ``at`` seconds (deploy, restart, config_change)."""

    at: float
    service: str
    type: str
    payload: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...] = ()
    events: tuple[OneOff, ...] = ()
    base_error_ratio: float = 0.005
    #: repeat the phases and events every ``period`` seconds (the demo's story loops)
    period: float | None = None

    def _at(self, t: float) -> float:
        return t % self.period if self.period else t

    def error_ratio(self, service: str, t: float) -> float:
        t = self._at(t)
        for p in self.phases:
            if p.service == service and p.start <= t < p.end and p.error_ratio is not None:
                return p.error_ratio
        return self.base_error_ratio

    def latency_factor(self, service: str, t: float) -> float:
        t = self._at(t)
        for p in self.phases:
            if p.service == service and p.start <= t < p.end and p.latency_factor is not None:
                return p.latency_factor
        return 1.0


def scenario(name: str, duration: float, services: tuple[str, ...] = SERVICES) -> Scenario:
    """The named scenarios; the interesting part sits in the middle third of the run."""
    target = services[0]
    start, end = duration / 3, 2 * duration / 3
    if name == "steady":
        return Scenario(name, "steady traffic, 0.5 % errors")
    if name == "error-burst":
        return Scenario(
            name,
            f"{target}: 40 % errors from {start:.0f} s to {end:.0f} s",
            phases=(Phase(start, end, target, error_ratio=0.4),),
        )
    if name == "latency-spike":
        return Scenario(
            name,
            f"{target}: latency x8 from {start:.0f} s to {end:.0f} s",
            phases=(Phase(start, end, target, latency_factor=8.0),),
        )
    if name == "deploy":
        return Scenario(
            name,
            f"{target}: deploy at {start:.0f} s, then 15 s of 25 % errors",
            phases=(Phase(start + 2, start + 17, target, error_ratio=0.25),),
            events=(OneOff(start, target, "deploy", {"version": "2.4.1", "by": "ci"}),),
        )
    raise ValueError(f"unknown scenario {name!r}: use steady, error-burst, latency-spike or deploy")


SCENARIOS = ("steady", "error-burst", "latency-spike", "deploy")

Message = tuple[str, bytes, bytes]  # (kind, key, value)


class Traffic:
    """Generates messages for time ``t``; pure apart from its random generator."""

    def __init__(
        self, plan: Scenario, services: tuple[str, ...] = SERVICES, seed: int | None = None
    ):
        self.plan = plan
        self.services = services
        self.hosts = {s: [f"{s}-{i}" for i in range(1, 4)] for s in services}
        self.rng = random.Random(seed)
        self._next_gauge = 0.0
        self._pending = sorted(plan.events, key=lambda e: e.at)
        self._cycle = 0
        self._request = 0

    def _log(self, service: str, now: float, t: float) -> bytes:
        rng = self.rng
        host = rng.choice(self.hosts[service])
        self._request += 1
        if rng.random() < self.plan.error_ratio(service, t):
            level, msg = "error", rng.choice(ERROR_MESSAGES)
        else:
            level = "warn" if rng.random() < 0.02 else "info"
            msg = f"{rng.choice(('GET', 'POST'))} {rng.choice(PATHS)} 200"
        return _encode(
            {
                "ts": now,
                "service": service,
                "host": host,
                "level": level,
                "msg": msg,
                "request_id": f"{self._request:012x}",
            }
        )

    def _latency(self, service: str, now: float, t: float) -> bytes:
        rng = self.rng
        value = rng.lognormvariate(3.6, 0.5) * self.plan.latency_factor(service, t)
        return _encode(
            {
                "ts": now,
                "service": service,
                "host": rng.choice(self.hosts[service]),
                "name": "http_request_duration_ms",
                "value": round(value, 3),
                "labels": {"path": rng.choice(PATHS)},
            }
        )

    def _gauges(self, now: float) -> Iterator[Message]:
        rng = self.rng
        for service, hosts in self.hosts.items():
            for host in hosts:
                for name, value in (
                    ("cpu_usage_percent", min(100.0, rng.gauss(35, 8))),
                    ("memory_usage_percent", min(100.0, rng.gauss(60, 5))),
                ):
                    yield (
                        "metrics",
                        service.encode(),
                        _encode(
                            {
                                "ts": now,
                                "service": service,
                                "host": host,
                                "name": name,
                                "value": round(max(0.0, value), 2),
                            }
                        ),
                    )

    def batch(self, t: float, requests: int, now: float | None = None) -> list[Message]:
        """Messages for ``requests`` requests at run time ``t`` (plus gauges and due events)."""
        wall = time.time() if now is None else now
        out: list[Message] = []
        period = self.plan.period
        while period and t >= (self._cycle + 1) * period:
            self._cycle += 1
            shift = self._cycle * period
            self._pending += [
                OneOff(e.at + shift, e.service, e.type, e.payload) for e in self.plan.events
            ]
        while self._pending and self._pending[0].at <= t:
            ev = self._pending.pop(0)
            out.append(
                (
                    "events",
                    ev.service.encode(),
                    _encode(
                        {
                            "ts": wall,
                            "service": ev.service,
                            "type": ev.type,
                            "severity": "info",
                            "payload": ev.payload,
                        }
                    ),
                )
            )
        if t >= self._next_gauge:
            self._next_gauge = t + 1.0
            out.extend(self._gauges(wall))
        choice = self.rng.choice
        for _ in range(requests):
            service = choice(self.services)
            key = service.encode()
            out.append(("logs", key, self._log(service, wall, t)))
            out.append(("metrics", key, self._latency(service, wall, t)))
        return out


@dataclass
class RunResult:
    produced: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    failed: int = 0
    seconds: float = 0.0


def run(
    produce: Callable[[str, bytes, bytes], None],
    poll: Callable[[], object],
    traffic: Traffic,
    rate: float,
    duration: float,
    on_tick: Callable[[float, RunResult], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> RunResult:
    """Produce about ``rate`` messages/s for ``duration`` s (two messages per request)."""
    result = RunResult()
    started = time.monotonic()
    sent_requests = 0.0
    tick = 0.02
    while not stop():
        t = time.monotonic() - started
        if t >= duration:
            break
        due = rate / 2 * t - sent_requests
        if due >= 1:
            n = int(due)
            sent_requests += n
            for kind, key, value in traffic.batch(t, n):
                produce(kind, key, value)
                result.produced[kind] += 1
        poll()
        if on_tick is not None:
            on_tick(t, result)
        time.sleep(max(0.0, tick - (time.monotonic() - started - t)))
    result.seconds = time.monotonic() - started
    return result
