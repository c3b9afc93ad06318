"""What the embedded broker costs while `rtmh up` runs: its memory and CPU, sampled with each
refresh of the view, and a warning line when they climb past what a bounded log needs."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import psutil

#: CPU is averaged over this many seconds of samples
CPU_SPAN_S = 30.0
#: a bounded log keeps the broker far below these (README, performance): above them, say so
WARN_RSS_BYTES = 250 * 2**20
WARN_CPU_PERCENT = 50.0
#: one warning per kind in this many seconds
WARN_EVERY_S = 300.0


@dataclass(frozen=True, slots=True)
class BrokerSample:
    at: float
    rss: int
    #: user + system CPU seconds since the broker started
    cpu_s: float


@dataclass(frozen=True, slots=True)
class BrokerLoad:
    rss: int
    #: percent of one core over the last CPU_SPAN_S (None until two samples)
    cpu_percent: float | None


def load_of(samples: deque[BrokerSample]) -> BrokerLoad | None:
    """The newest memory and the CPU over the samples kept."""
    if not samples:
        return None
    first, last = samples[0], samples[-1]
    span = last.at - first.at
    cpu = 100.0 * (last.cpu_s - first.cpu_s) / span if span > 0 else None
    return BrokerLoad(last.rss, cpu)


def warnings_for(load: BrokerLoad, span_s: float) -> list[tuple[str, str]]:
    """(kind, line) for each bound ``load`` is past; CPU only once a full span is sampled."""
    found: list[tuple[str, str]] = []
    advice = (
        "the embedded broker is meant for trying RTMH and small installs; for more traffic set "
        "KAFKA_BOOTSTRAP_SERVERS to a Kafka cluster"
    )
    if load.rss >= WARN_RSS_BYTES:
        found.append(
            (
                "rss",
                f"embedded broker uses {load.rss / 2**20:.0f} MB of memory and climbing; {advice}",
            )
        )
    if (
        load.cpu_percent is not None
        and span_s >= CPU_SPAN_S
        and load.cpu_percent >= WARN_CPU_PERCENT
    ):
        found.append(
            (
                "cpu",
                f"embedded broker used {load.cpu_percent:.0f} % of a core over the last "
                f"{CPU_SPAN_S:.0f} s; {advice}",
            )
        )
    return found


class BrokerWatch:
    """Samples one broker process; ``sample`` returns the warnings due now."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.samples: deque[BrokerSample] = deque()
        self._warned: dict[str, float] = {}

    def sample(self, now: float) -> list[str]:
        try:
            with self.process.oneshot():
                times = self.process.cpu_times()
                rss = self.process.memory_info().rss
        except psutil.Error:
            return []
        self.samples.append(BrokerSample(now, rss, times.user + times.system))
        # keep one sample at least CPU_SPAN_S old, so the average spans the whole of it
        while len(self.samples) > 2 and now - self.samples[1].at >= CPU_SPAN_S:
            self.samples.popleft()
        load = load_of(self.samples)
        if load is None:
            return []
        due: list[str] = []
        for kind, line in warnings_for(load, now - self.samples[0].at):
            if now - self._warned.get(kind, -WARN_EVERY_S) >= WARN_EVERY_S:
                self._warned[kind] = now
                due.append(line)
        return due

    @property
    def load(self) -> BrokerLoad | None:
        return load_of(self.samples)
