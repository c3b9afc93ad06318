"""What one `rtmh bench soak` run is made of: its parameters, the faults and bursts it plans
(seeded, so a run can be repeated), what it samples, and the verdicts of its end checks. Pure."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rtmh.bench.detect.model import Burst
from rtmh.bench.stats import slope
from rtmh.simulate import service_names

KILL_WORKER = "kill_worker"
KILL_NOTIFIER = "kill_notifier"
RESTART_POSTGRES = "restart_postgres"
FAIL_RECEIVER = "fail_receiver"
FAULTS = (KILL_WORKER, KILL_NOTIFIER, RESTART_POSTGRES, FAIL_RECEIVER)

#: the processes whose memory is sampled, in the plot's order
ROLES = ("worker-1", "worker-2", "notifier", "broker", "postgres")
WORKERS = ("worker-1", "worker-2")

#: a notification retried with equal jitter (backoff base 1 s) makes its 8th and last attempt no
#: sooner than (1 + 2 + ... + 64 s) / 2 = 63.5 s after its first: a receiver failing for at most
#: half that loses nothing to max_attempts; a longer outage would, by design (`dead`)
MAX_RECEIVER_FAILURE_S = 30.0
#: a receiver failure starts this long before the burst it waits for
RECEIVER_LEAD_S = 2.0
#: an incident opened this long after its burst's end still counts as the burst's alert: a burst
#: whose partitions a killed worker held waits for its session timeout and a rebalance
ALERT_GRACE_S = 180.0
#: the broker's memory is "flat" when it grows by less than this over the second half
FLAT_MB_PER_10_MIN = 10.0
#: targets of the embedded broker (README, performance; as `rtmh bench up-soak`)
TARGET_BROKER_CPU = 25.0
TARGET_BROKER_RSS_MB = 300.0


@dataclass(frozen=True)
class SoakConfig:
    duration_s: float = 3600.0
    #: messages per second of steady traffic (bursts come on top)
    rate: float = 200.0
    seed: int = 20_261_201
    #: mean seconds between two faults (each gap is 0.5x to 1.5x of it)
    fault_every_s: float = 120.0
    #: one fault-free stretch at the start, so the run has a clean baseline
    quiet_start_s: float = 60.0
    #: a killed process stays down this long (range), as a supervisor's restart backoff would
    down_s: tuple[float, float] = (2.0, 15.0)
    receiver_failure_s: tuple[float, float] = (10.0, MAX_RECEIVER_FAILURE_S)
    #: an error burst on one service every this many seconds, each lasting burst_s
    burst_every_s: float = 240.0
    burst_s: float = 30.0
    burst_errors: float = 0.5
    #: one malformed message after every this many good ones
    bad_every: int = 997
    services: int = 6
    #: seconds between memory samples
    sample_s: float = 60.0

    def service_list(self) -> list[str]:
        return list(service_names(self.services))


@dataclass(frozen=True)
class Fault:
    #: seconds after the traffic started
    at: float
    kind: str
    #: how long the process stays down / the receiver fails (0 for a PostgreSQL restart)
    hold_s: float
    #: the worker killed (1 or 2); for a PostgreSQL restart, 1 = immediate (as a crash), 0 = fast
    target: int = 0

    def describe(self) -> str:
        if self.kind == KILL_WORKER:
            return f"SIGKILL worker-{self.target}, down {self.hold_s:.0f} s"
        if self.kind == KILL_NOTIFIER:
            return f"SIGKILL notifier, down {self.hold_s:.0f} s"
        if self.kind == RESTART_POSTGRES:
            return f"restart PostgreSQL ({'immediate' if self.target else 'fast'} shutdown)"
        return f"webhook receiver answers 503 for {self.hold_s:.0f} s"


def fault_schedule(
    config: SoakConfig, kinds: tuple[str, ...] = FAULTS, bursts: list[Burst] | None = None
) -> list[Fault]:
    """Faults at random times from ``quiet_start_s`` to the end: kinds in rounds of a random
    order each, so every kind comes once before any comes twice (a short run has them all).
    Each fault starts after the previous one has ended. A receiver failure waits for the next
    burst and starts just before it: then the hub has something to deliver while it fails
    (at a random time it would mostly fail in silence)."""
    rng = random.Random(config.seed)
    starts = sorted(b.start for b in bursts or [])
    faults: list[Fault] = []
    t = config.quiet_start_s
    order: list[str] = []
    while True:
        if not order:
            order = rng.sample(list(kinds), len(kinds))
        kind = order.pop()
        if kind == FAIL_RECEIVER:
            hold = rng.uniform(*config.receiver_failure_s)
            t = next((b - RECEIVER_LEAD_S for b in starts if b - RECEIVER_LEAD_S >= t), t)
        elif kind == RESTART_POSTGRES:
            hold = 0.0
        else:
            hold = rng.uniform(*config.down_s)
        target = rng.choice((1, 2)) if kind == KILL_WORKER else 0
        if kind == RESTART_POSTGRES:
            target = rng.choice((0, 1))
        if t + hold >= config.duration_s:
            return faults
        faults.append(Fault(round(t, 1), kind, round(hold, 1), target))
        t += hold + config.fault_every_s * rng.uniform(0.5, 1.5)


def burst_schedule(config: SoakConfig) -> list[Burst]:
    """An error burst every ``burst_every_s`` (the first after one gap), on the services in
    turn; none that would end after the run."""
    names = config.service_list()
    bursts: list[Burst] = []
    start = config.burst_every_s
    while start + config.burst_s <= config.duration_s:
        i = len(bursts) % len(names)
        bursts.append(Burst(len(bursts), names[i], i, start, start + config.burst_s))
        start += config.burst_every_s
    return bursts


@dataclass(frozen=True)
class FaultDone:
    """A fault as it happened: when, what, and how long until the hub had recovered from it
    (the process back / the server answering / the receiver accepting again)."""

    at: float
    kind: str
    what: str
    recovered_s: float


@dataclass(frozen=True)
class MemorySample:
    #: seconds since the traffic started
    t: float
    #: role -> MB (None: the process was down at that moment); PostgreSQL: PSS of all its
    #: processes (their shared buffers counted once), the others RSS
    mb: dict[str, float | None]
    #: the broker's CPU since the previous sample, percent of one core
    broker_cpu: float | None


@dataclass
class Checks:
    """The end checks' raw findings."""

    good_sent: int = 0
    good_failed: int = 0
    good_rows: int = 0
    good_missing: int = 0
    good_duplicates: int = 0
    #: stored, though the producer was told its delivery failed
    good_unexpected: int = 0
    bad_sent: int = 0
    bad_dead_lettered: int = 0
    bad_missing: int = 0
    bad_reasons: dict[str, int] = field(default_factory=dict)
    windows_compared: int = 0
    window_problems: list[str] = field(default_factory=list)
    incidents: int = 0
    bursts: int = 0
    #: bursts with an incident opened (or reopened) for their service during or after them
    bursts_alerted: int = 0
    #: a burst's first line -> its incident opened
    alert_delay_p50_s: float | None = None
    alert_delay_max_s: float | None = None
    #: incidents opened when their service had no burst (the rule's chance false alerts), as
    #: "service at +N s" from the traffic's start
    openings_without_burst: list[str] = field(default_factory=list)
    notifications: int = 0
    notification_status: dict[str, int] = field(default_factory=dict)
    notification_attempts: int = 0
    keys_accepted: int = 0
    keys_missing: int = 0
    keys_unknown: int = 0
    #: an accepted key accepted again (the notifier killed between the receiver's 200 and its
    #: record): what the idempotency key is there to drop
    redeliveries: int = 0
    refused_by_receiver: int = 0
    bad_signatures: int = 0
    #: processes that died on their own (restarted, as a supervisor would)
    crashes: list[str] = field(default_factory=list)

    @property
    def exactly_once(self) -> bool:
        return (
            self.good_sent > 0
            and self.good_missing == 0
            and self.good_duplicates == 0
            and self.good_rows == self.good_sent - self.good_failed
        )

    @property
    def dead_letters_ok(self) -> bool:
        return (
            self.bad_sent > 0 and self.bad_missing == 0 and self.bad_dead_lettered == self.bad_sent
        )

    @property
    def windows_ok(self) -> bool:
        return self.windows_compared > 0 and not self.window_problems

    @property
    def alerts_ok(self) -> bool:
        return self.bursts > 0 and self.bursts_alerted == self.bursts

    @property
    def notifications_ok(self) -> bool:
        """Every notification sent, and the receiver accepted exactly the keys of the rows."""
        sent = self.notification_status.get("sent", 0)
        return (
            self.notifications > 0
            and sent == self.notifications
            and self.keys_missing == 0
            and self.keys_unknown == 0
            and self.keys_accepted == self.notifications
            and self.bad_signatures == 0
        )

    def passed(self) -> bool:
        return (
            not self.crashes
            and self.exactly_once
            and self.dead_letters_ok
            and self.windows_ok
            and self.alerts_ok
            and self.notifications_ok
        )


@dataclass
class SoakResult:
    config: SoakConfig
    short: bool = False
    faults_planned: list[Fault] = field(default_factory=list)
    faults: list[FaultDone] = field(default_factory=list)
    bursts: int = 0
    memory: list[MemorySample] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)
    rolls: int = 0
    max_hold_ms: int = 0
    #: fetches that named a rolled topic's old id, which the gate answered itself
    stale_fetches: int = 0
    ran_s: float = 0.0
    #: traffic stopped -> everything stored, settled and delivered
    settle_s: float = 0.0
    skipped: list[str] = field(default_factory=list)
    plot: str | None = None
    #: why the run ended before its checks (a crash loop, a hub that never settled)
    error: str | None = None
    #: where the processes' logs were kept (a run that failed)
    logs: str | None = None
    machine: dict[str, object] = field(default_factory=dict)
    finished_at: str = ""

    def passed(self) -> bool:
        return self.error is None and self.checks.passed()

    def figures(self) -> dict[str, Any]:
        return memory_figures(self.memory, self.ran_s)

    def as_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "config": asdict(self.config),
            "short": self.short,
            "passed": self.passed(),
            "error": self.error,
            "logs": self.logs,
            "checks": {
                **asdict(self.checks),
                "exactly_once": self.checks.exactly_once,
                "dead_letters_ok": self.checks.dead_letters_ok,
                "windows_ok": self.checks.windows_ok,
                "alerts_ok": self.checks.alerts_ok,
                "notifications_ok": self.checks.notifications_ok,
                "window_problems": self.checks.window_problems[:50],
            },
            "faults": [asdict(f) for f in self.faults],
            "faults_by_kind": faults_by_kind(self.faults),
            "bursts": self.bursts,
            "figures": self.figures(),
            "memory": [asdict(m) for m in self.memory],
            "rolls": self.rolls,
            "max_hold_ms": self.max_hold_ms,
            "stale_fetches": self.stale_fetches,
            "ran_s": round(self.ran_s, 1),
            "settle_s": round(self.settle_s, 1),
            "skipped": self.skipped,
            "plot": self.plot,
            "machine": self.machine,
            "finished_at": self.finished_at,
        }


@dataclass(frozen=True)
class Alerts:
    alerted: int
    #: per alerted burst: its first line -> its incident opened, seconds
    delays_s: list[float]
    #: openings with no burst of their service to explain them: (service, time.time())
    unexplained: list[tuple[str, float]]


def match_alerts(
    bursts: list[tuple[str, float]],
    burst_s: float,
    openings: list[tuple[str, float]],
    grace_s: float = ALERT_GRACE_S,
) -> Alerts:
    """Each burst (service, wall time of its first line) matched to the first opening of its
    service from its start to ``grace_s`` after its end; openings of a service outside all of
    its bursts' spans are unexplained. Times are ``time.time()`` seconds."""
    used: set[int] = set()
    delays: list[float] = []
    for service, start in bursts:
        for i, (svc, at) in enumerate(openings):
            if i not in used and svc == service and start <= at <= start + burst_s + grace_s:
                used.add(i)
                delays.append(round(at - start, 2))
                break
    unexplained = [
        (svc, at)
        for svc, at in openings
        if not any(svc == s and s_at <= at <= s_at + burst_s + grace_s for s, s_at in bursts)
    ]
    return Alerts(len(delays), delays, unexplained)


def faults_by_kind(faults: list[FaultDone]) -> dict[str, int]:
    return {kind: sum(f.kind == kind for f in faults) for kind in FAULTS}


def memory_figures(samples: list[MemorySample], ran_s: float) -> dict[str, Any]:
    """Per role: first, max and last MB and the slope over the second half of the run (MB per
    10 min; a leak is a positive slope that does not flatten); the broker's CPU."""
    out: dict[str, Any] = {}
    half = ran_s / 2
    for role in ROLES:
        points = [(s.t, v) for s in samples if (v := s.mb.get(role)) is not None]
        if not points:
            continue
        out[role] = {
            "first_mb": round(points[0][1], 1),
            "max_mb": round(max(v for _, v in points), 1),
            "last_mb": round(points[-1][1], 1),
            "slope_second_half_mb_per_10_min": slope(
                [p for p in points if p[0] >= half], per=600.0
            ),
        }
    cpus = [s.broker_cpu for s in samples if s.broker_cpu is not None]
    out["broker_cpu_mean"] = round(sum(cpus) / len(cpus), 1) if cpus else None
    out["broker_cpu_max"] = max(cpus, default=None)
    return out


def broker_bounded(figures: dict[str, Any]) -> bool | None:
    """The broker's memory under its target and flat, its CPU under its target (None: not
    measured, e.g. a broker the user brought)."""
    broker = figures.get("broker")
    cpu = figures.get("broker_cpu_mean")
    if broker is None or cpu is None:
        return None
    slope_ = broker["slope_second_half_mb_per_10_min"]
    return bool(
        broker["max_mb"] < TARGET_BROKER_RSS_MB
        and (slope_ is None or slope_ < FLAT_MB_PER_10_MIN)
        and cpu < TARGET_BROKER_CPU
    )
