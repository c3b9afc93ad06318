"""What one `rtmh bench detect` run is made of: its parameters, the bursts it plans, what it
observes of each, and the latency stages it reports."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from rtmh.config import Settings
from rtmh.embedded.log_roll import RollOutcome
from rtmh.simulate import service_names

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
#: the traffic produces one batch every TICK_S (its lines' ``ts`` has this resolution)
TICK_S = 0.01
#: the watcher's fallback poll when no NOTIFY arrives
POLL_S = 0.02
SEED = 20_240_601
TARGET_P99_S = 1.0


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
        return list(service_names(self.services))


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


@dataclass
class Observed:
    """Everything a run saw, before it is turned into figures (measure.py)."""

    settings: Settings
    config: DetectConfig
    rule: RuleParams
    bursts: list[Burst]
    events: list[IncidentEvent]
    started_at: str
    #: time.time() when the traffic began (burst start/end are seconds after it)
    traffic_started_wall: float
    #: seconds the traffic ran, and messages it produced
    ran_s: float
    produced: int
    #: t0/t1 (seconds into the traffic) and produced/committed counts at both: the measured span
    window: dict[str, float]
    join_s: float
    drain_s: float
    max_lag: int
    cpu_percent: dict[str, float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    #: the embedded broker's log rolls (none on a broker the user brought)
    rolls: list[RollOutcome] = field(default_factory=list)


#: (JSON key, label, later clock, earlier clock): each reported latency is later - earlier
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
