"""What one `rtmh bench compare` run is made of: the peer's profiles, the services (bursting,
calm, quiet), the bursts' schedule, and what each system's webhook receiver saw."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rtmh.bench.detect.model import BASE_ERROR_RATIO, Burst
from rtmh.simulate import service_names

#: the RTMH side, as it appears in the table and the JSON
RTMH = "rtmh"
#: services that never burst: base errors only (a false alert on them is plainly false)
CALM_SERVICES = 2
#: the quiet service: a batch job's few requests and exactly one error among them
QUIET_SERVICE = "quiet-cron"
#: its share of the requests, against 1.0 for each other service (~0.1 request/s at 100/s over
#: 7 services): one error among a minute's handful of requests is far above 5 %
QUIET_WEIGHT = 0.007
SEED = 20_261_201


@dataclass(frozen=True)
class Profile:
    """Prometheus + Alertmanager settings: the intervals that decide how fast they can alert."""

    name: str
    scrape_s: float
    evaluation_s: float
    rate_window_s: float
    group_wait_s: float
    group_interval_s: float
    #: bursts last this long: the profile's slowest plausible detection fits well inside
    burst_s: float
    #: a burst's first webhook later than this after its start counts as missed
    deadline_s: float

    @property
    def warmup_s(self) -> float:
        """A full `rate` window and two scrapes at rest before anything happens: in a window
        that is still filling, a burst's errors are a larger share than in steady state (the
        first short run detected in 2 s, measured, where a full 1 m window needs ~6 s)."""
        return self.rate_window_s + 2 * self.scrape_s + 5

    @property
    def short_warmup_s(self) -> float:
        """Two scrapes of every counter at rest (rate needs two): enough to detect at all."""
        return 2 * self.scrape_s + 5

    @property
    def grace_s(self) -> float:
        """After a burst, its alert can still (re)fire this long: the `rate` window still holds
        its errors until a scrape and an evaluation past the window, then group_wait."""
        return self.rate_window_s + 2 * self.scrape_s + self.evaluation_s + self.group_wait_s

    @property
    def system(self) -> str:
        return f"prometheus/{self.name}"

    def describe(self) -> dict[str, float | str]:
        return {
            "scrape_interval_s": self.scrape_s,
            "evaluation_interval_s": self.evaluation_s,
            "rate_window_s": self.rate_window_s,
            "for_s": 0,
            "group_wait_s": self.group_wait_s,
            "group_interval_s": self.group_interval_s,
            "burst_s": self.burst_s,
            "deadline_s": self.deadline_s,
        }


#: Prometheus's and Alertmanager's defaults (scrape and evaluation 1 m, group_interval 5 m,
#: group_wait 30 s) with the 2 m `rate` window a 1 m scrape needs; and the tightest sane ones
PROFILES = {
    "tight": Profile("tight", 1, 1, 60, 0, 1, burst_s=20, deadline_s=40),
    "default": Profile("default", 60, 60, 120, 30, 300, burst_s=240, deadline_s=300),
}
#: the RTMH side needs its windows filled and the worker in steady state (bench detect's figure)
RTMH_WARMUP_S = 12.0


@dataclass(frozen=True)
class CompareConfig:
    bursts: int = 5
    rate: float = 200.0
    profiles: tuple[str, ...] = ("tight", "default")
    burst_errors: float = 0.5
    base_errors: float = BASE_ERROR_RATIO
    seed: int = SEED
    #: False (--short): a warm-up of two scrapes only, the `rate` window not yet full; the
    #: run checks that everything works, its figures flatter Prometheus
    full_windows: bool = True

    def chosen(self) -> list[Profile]:
        return [PROFILES[name] for name in self.profiles]

    def bursting(self) -> list[str]:
        return list(service_names(self.bursts))

    def services(self) -> list[str]:
        """Bursting services first, then the calm ones, then the quiet one."""
        names = service_names(self.bursts + CALM_SERVICES)
        return [*names, QUIET_SERVICE]

    def weights(self) -> list[float]:
        return [1.0] * (self.bursts + CALM_SERVICES) + [QUIET_WEIGHT]


@dataclass(frozen=True)
class Timeline:
    """When things happen, in seconds since the traffic began."""

    warmup_s: float
    burst_s: float
    deadline_s: float
    quiet_error_at: float
    #: the run stops here at the latest
    end_s: float


def timeline(config: CompareConfig) -> Timeline:
    """The slowest chosen profile sets the pace: its warm-up, burst length and deadline."""
    profiles = config.chosen()
    warmup = max(
        [
            RTMH_WARMUP_S,
            *(p.warmup_s if config.full_windows else p.short_warmup_s for p in profiles),
        ]
    )
    burst = max([10.0, *(p.burst_s for p in profiles)])
    deadline = max([burst, *(p.deadline_s for p in profiles)])
    spacing = _spacing(profiles)
    last_start = warmup + (config.bursts - 1) * spacing * 1.5
    return Timeline(warmup, burst, deadline, warmup / 2, last_start + deadline)


def _spacing(profiles: list[Profile]) -> float:
    """Mean gap between burst starts: about one scrape interval of the slowest profile, so the
    bursts start at every phase of its scrape and evaluation cycles."""
    return max([4.0, *(p.scrape_s for p in profiles)])


def schedule(config: CompareConfig, line: Timeline) -> list[Burst]:
    """One burst per bursting service, starts spread at random over the scrape cycle; bursts
    of different services may overlap (each system judges each service on its own)."""
    rng = random.Random(config.seed + 1)
    spacing = _spacing(config.chosen())
    bursts: list[Burst] = []
    t = line.warmup_s
    for i, name in enumerate(config.bursting()):
        bursts.append(Burst(i, name, i, t, t + line.burst_s))
        t += rng.uniform(0.5, 1.5) * spacing
    return bursts


@dataclass(frozen=True)
class Arrival:
    """One firing alert for ``service`` in a webhook that ``system``'s receiver had at ``at``."""

    system: str
    service: str
    at: float


@dataclass
class Observed:
    """What one run saw, before measure.py turns it into figures."""

    config: CompareConfig
    timeline: Timeline
    profiles: list[Profile]
    bursts: list[Burst]
    arrivals: list[Arrival]
    traffic_started_wall: float
    stopped_at: float
    ran_s: float
    produced: int
    quiet_error_sent: float | None
    requests: dict[str, int]
    window_size_s: int
    window_slide_s: int
    rule: dict[str, Any]
