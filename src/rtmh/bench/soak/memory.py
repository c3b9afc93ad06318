"""The soak's memory samples (each process's RSS, PostgreSQL's PSS, the broker's CPU) and their
plot: one line per process over the run, a mark at each fault, so a leak shows as a line that
keeps rising."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import psutil

from rtmh.bench.common import rss_mb as process_rss_mb
from rtmh.bench.soak.model import FAULTS, ROLES, FaultDone, MemorySample

MB = 2**20


def rss_mb(pid: int | None) -> float | None:
    """A sampled process's RSS to 0.1 MB; None when it is down (no pid, or gone)."""
    mb = None if pid is None else process_rss_mb(pid)
    return None if mb is None else round(mb, 1)


def pss_mb(pids: list[int]) -> float | None:
    """Proportional set size summed over ``pids``: memory the processes share (PostgreSQL's
    shared buffers) counted once, where summing RSS would count it once per backend."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            info = psutil.Process(pid).memory_full_info()
            total += getattr(info, "pss", info.rss)
    return round(total / MB, 1)


def cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return None


class Sampler:
    """``sample(t)`` reads every role's memory (``pids()`` says where each one is now: a
    restarted process has a new pid) and the broker's CPU since the previous sample."""

    def __init__(
        self,
        pids: Callable[[], dict[str, int | None]],
        postgres_pids: Callable[[], list[int]],
        clock: Callable[[], float],
    ):
        self.pids = pids
        self.postgres_pids = postgres_pids
        self.clock = clock
        self._broker_last: tuple[float, float] | None = None

    def sample(self, t: float) -> MemorySample:
        pids = self.pids()
        mb: dict[str, float | None] = {r: rss_mb(pids.get(r)) for r in ROLES if r != "postgres"}
        mb["postgres"] = pss_mb(self.postgres_pids())
        return MemorySample(round(t, 1), mb, self._broker_cpu(pids.get("broker")))

    def _broker_cpu(self, pid: int | None) -> float | None:
        used, now = cpu_seconds(pid), self.clock()
        if used is None:
            return None
        last, self._broker_last = self._broker_last, (now, used)
        if last is None or now <= last[0]:
            return None
        return round((used - last[1]) / (now - last[0]) * 100, 1)


_FAULT_COLOURS = dict(zip(FAULTS, ("tab:red", "tab:orange", "tab:purple", "tab:gray"), strict=True))


def plot(samples: list[MemorySample], faults: list[FaultDone], path: Path, title: str) -> bool:
    """Writes the PNG; False when matplotlib is not installed (`pip install 'rtmh[bench]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: a file only
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(10, 5.5), dpi=100)
    try:
        for role in ROLES:
            points = [(s.t / 60, v) for s in samples if (v := s.mb.get(role)) is not None]
            xs, ys = [x for x, _ in points], [y for _, y in points]
            if xs:
                ax.plot(xs, ys, marker=".", linewidth=1.5, label=_label(role))
        seen: set[str] = set()
        for fault in faults:
            label = None if fault.kind in seen else fault.kind.replace("_", " ")
            seen.add(fault.kind)
            ax.axvline(
                fault.at / 60,
                color=_FAULT_COLOURS.get(fault.kind, "black"),
                alpha=0.6,
                linewidth=1,
                linestyle="--",
                label=label,
            )
        ax.set_xlabel("minutes")
        ax.set_ylabel("MB")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", ncols=5)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True


def _label(role: str) -> str:
    return "PostgreSQL (PSS, all processes)" if role == "postgres" else f"{role} (RSS)"
