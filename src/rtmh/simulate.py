"""`rtmh simulate`: realistic producer traffic for the topics, and the scripted stories of the demo.

Several services on several hosts handle requests: each request is a log line (level by the
service's current error ratio) and a latency sample; every host reports CPU and memory gauges each
second; deploys and restarts are events. A scenario is a list of phases that change one service's
behaviour for a while, so a burst or a spike is visible against steady traffic.

This is the one traffic generator: `rtmh simulate`, `rtmh up --demo` (its story, up/demo.py), the
ingest benchmark (steady traffic) and the detection benchmark (``bursts``, with a ``LogLine``
observer that tells it which line was an error) all draw their messages from ``Traffic``.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import msgspec

#: services are named from this list first, then svc020, svc021, ...
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


def service_names(count: int) -> tuple[str, ...]:
    """``count`` service names: SERVICE_NAMES first, then svc020, svc021, ..."""
    named = SERVICE_NAMES[:count]
    return named + tuple(f"svc{i:03d}" for i in range(len(named), count))


SERVICES = service_names(5)

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Phase:
    """For ``start <= t < end`` (seconds since the run began) ``service`` behaves differently."""

    start: float
    end: float
    service: str
    error_ratio: float | None = None
    latency_factor: float | None = None
    #: the service logs at this multiple of its usual rate: extra log lines, no extra samples
    rate_factor: float | None = None


@dataclass(frozen=True, slots=True)
class OneOff:
    """An event emitted once at ``at`` seconds (deploy, restart, config_change)."""

    at: float
    service: str
    type: str
    payload: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Conditions:
    """Which phase decides each service's error ratio, latency and log rate at one moment."""

    errors: dict[str, Phase]
    latency: dict[str, Phase]
    rate: dict[str, Phase]


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    phases: tuple[Phase, ...] = ()
    events: tuple[OneOff, ...] = ()
    base_error_ratio: float = 0.005
    #: repeat the phases and events every ``period`` seconds (the demo's story loops)
    period: float | None = None
    #: every host's CPU and memory gauges once a second; off, the traffic is the requests' own
    #: messages only (the detection benchmark's rate is exactly its log lines and samples)
    gauges: bool = True

    def _at(self, t: float) -> float:
        return t % self.period if self.period else t

    def conditions(self, t: float) -> Conditions:
        """The phases in force at ``t``: the first one of a service that sets a value wins."""
        t = self._at(t)
        errors: dict[str, Phase] = {}
        latency: dict[str, Phase] = {}
        rate: dict[str, Phase] = {}
        for p in self.phases:
            if not p.start <= t < p.end:
                continue
            if p.error_ratio is not None:
                errors.setdefault(p.service, p)
            if p.latency_factor is not None:
                latency.setdefault(p.service, p)
            if p.rate_factor is not None:
                rate.setdefault(p.service, p)
        return Conditions(errors, latency, rate)

    def error_ratio(self, service: str, t: float) -> float:
        phase = self.conditions(t).errors.get(service)
        return self.base_error_ratio if phase is None else _set(phase.error_ratio)

    def latency_factor(self, service: str, t: float) -> float:
        phase = self.conditions(t).latency.get(service)
        return 1.0 if phase is None else _set(phase.latency_factor)


def _set(value: float | None) -> float:
    assert value is not None  # Conditions only holds phases that set the value asked for
    return value


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


def bursts(
    spans: Iterable[tuple[float, float, str]],
    *,
    error_ratio: float,
    rate_factor: float = 1.0,
    base_error_ratio: float = 0.005,
) -> Scenario:
    """Error bursts, one ``(start, end, service)`` each: the service's log lines are errors with
    probability ``error_ratio`` and it logs at ``rate_factor`` times its rate; no gauges."""
    phases = tuple(
        Phase(
            start,
            end,
            service,
            error_ratio=error_ratio,
            rate_factor=rate_factor if rate_factor != 1.0 else None,
        )
        for start, end, service in spans
    )
    return Scenario(
        "bursts",
        f"{len(phases)} error bursts of {error_ratio:.0%} errors",
        phases=phases,
        base_error_ratio=base_error_ratio,
        gauges=False,
    )


Message = tuple[str, bytes, bytes]  # (kind, key, value)


@dataclass(frozen=True, slots=True)
class LogLine:
    """A log line as ``Traffic`` made it, for an observer that must know which line was an error
    (the detection benchmark). Observed just before the line is handed on to be produced."""

    service: str
    request_id: str
    error: bool
    #: the line's ``ts`` (its generation time, epoch seconds)
    ts: float
    #: the phase that set the service's error ratio, None at the base ratio
    phase: Phase | None


class Traffic:
    """Generates messages for time ``t``; pure apart from its random generator (and the
    observer, when given, which sees every log line)."""

    def __init__(
        self,
        plan: Scenario,
        services: tuple[str, ...] = SERVICES,
        seed: int | None = None,
        on_log: Callable[[LogLine], None] | None = None,
        weights: Sequence[float] | None = None,
    ):
        """``weights``: each service's share of the requests (relative; None: equal shares)."""
        self.plan = plan
        self.services = services
        if weights is not None and len(weights) != len(services):
            raise ValueError(f"{len(weights)} weights for {len(services)} services")
        #: cumulative weights, None for equal shares (rng.choice: the stream seeded runs repeat)
        self._cum_weights = None if weights is None else list(accumulate(weights))
        self.hosts = {s: [f"{s}-{i}" for i in range(1, 4)] for s in services}
        self.rng = random.Random(seed)
        self.on_log = on_log
        self._next_gauge = 0.0
        self._pending = sorted(plan.events, key=lambda e: e.at)
        self._cycle = 0
        self._request = 0
        #: service -> extra log lines owed under a rate_factor phase (the fraction carries over)
        self._extra_due: dict[str, float] = {}

    def _log(self, service: str, now: float, phase: Phase | None) -> bytes:
        rng = self.rng
        host = rng.choice(self.hosts[service])
        self._request += 1
        request = f"{self._request:012x}"
        ratio = self.plan.base_error_ratio if phase is None else _set(phase.error_ratio)
        error = rng.random() < ratio
        if error:
            level, msg = "error", rng.choice(ERROR_MESSAGES)
        else:
            level = "warn" if rng.random() < 0.02 else "info"
            msg = f"{rng.choice(('GET', 'POST'))} {rng.choice(PATHS)} 200"
        if self.on_log is not None:
            self.on_log(LogLine(service, request, error, now, phase))
        return _encode(
            {
                "ts": now,
                "service": service,
                "host": host,
                "level": level,
                "msg": msg,
                "request_id": request,
            }
        )

    def _latency(self, service: str, now: float, phase: Phase | None) -> bytes:
        rng = self.rng
        factor = 1.0 if phase is None else _set(phase.latency_factor)
        value = rng.lognormvariate(3.6, 0.5) * factor
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

    def _events(self, t: float, now: float) -> Iterator[Message]:
        """The one-off events due by ``t`` (each period's copy, when the plan repeats)."""
        period = self.plan.period
        while period and t >= (self._cycle + 1) * period:
            self._cycle += 1
            shift = self._cycle * period
            self._pending += [
                OneOff(e.at + shift, e.service, e.type, e.payload) for e in self.plan.events
            ]
        while self._pending and self._pending[0].at <= t:
            ev = self._pending.pop(0)
            event = {
                "ts": now,
                "service": ev.service,
                "type": ev.type,
                "severity": "info",
                "payload": ev.payload,
            }
            yield ("events", ev.service.encode(), _encode(event))

    def _extra_logs(self, requests: int, now: float, conditions: Conditions) -> Iterator[Message]:
        """Log lines of services logging faster than usual: (factor - 1) times the share of
        ``requests`` each service gets on average."""
        due = self._extra_due
        for service in [s for s in due if s not in conditions.rate]:
            del due[service]  # its phase ended: what it still owed is not carried into the next
        share = requests / len(self.services)
        for service, phase in conditions.rate.items():
            owed = due.get(service, 0.0) + share * (_set(phase.rate_factor) - 1.0)
            lines = int(owed)
            due[service] = owed - lines
            key = service.encode()
            errors = conditions.errors.get(service)
            for _ in range(lines):
                yield ("logs", key, self._log(service, now, errors))

    def messages(self, t: float, requests: int, now: float | None = None) -> Iterator[Message]:
        """Messages for ``requests`` requests at run time ``t`` (plus gauges and due events),
        made one by one as they are taken: an observer sees a log line just before its
        producer does."""
        wall = time.time() if now is None else now
        yield from self._events(t, wall)
        if self.plan.gauges and t >= self._next_gauge:
            self._next_gauge = t + 1.0
            yield from self._gauges(wall)
        conditions = self.plan.conditions(t)
        errors, latency = conditions.errors, conditions.latency
        choice = self._chooser()
        for _ in range(requests):
            service = choice(self.services)
            key = service.encode()
            yield ("logs", key, self._log(service, wall, errors.get(service)))
            yield ("metrics", key, self._latency(service, wall, latency.get(service)))
        if conditions.rate or self._extra_due:
            yield from self._extra_logs(requests, wall, conditions)

    def _chooser(self) -> Callable[[Sequence[str]], str]:
        cum = self._cum_weights
        if cum is None:
            return self.rng.choice
        choices = self.rng.choices
        return lambda services: choices(services, cum_weights=cum)[0]

    def one_log(self, phase: Phase, now: float | None = None) -> Message:
        """One log line of ``phase.service`` at the phase's error ratio, outside the request
        stream: a line a benchmark plants (the compare bench's one error of a quiet service),
        seen by the observer like any other."""
        wall = time.time() if now is None else now
        return ("logs", phase.service.encode(), self._log(phase.service, wall, phase))

    def batch(self, t: float, requests: int, now: float | None = None) -> list[Message]:
        """``messages`` as a list."""
        return list(self.messages(t, requests, now))


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
    *,
    until: Callable[[float], bool] | None = None,
    tick: float = 0.02,
) -> RunResult:
    """Produce about ``rate`` messages/s for ``duration`` s (two messages per request), one
    batch every ``tick`` s, each message handed to ``produce`` as soon as it is made.

    Stops early once ``stop()`` or ``until(t)`` (t = seconds since the start, asked before each
    tick's batch) is true; ``on_tick(t, result)`` runs after each batch."""
    result = RunResult()
    started = time.monotonic()
    sent_requests = 0.0
    while not stop():
        t = time.monotonic() - started
        if t >= duration or (until is not None and until(t)):
            break
        due = rate / 2 * t - sent_requests
        if due >= 1:
            n = int(due)
            sent_requests += n
            for kind, key, value in traffic.messages(t, n):
                produce(kind, key, value)
                result.produced[kind] += 1
        poll()
        if on_tick is not None:
            on_tick(t, result)
        time.sleep(max(0.0, tick - (time.monotonic() - started - t)))
    result.seconds = time.monotonic() - started
    return result
