"""`rtmh bench up-soak`: `rtmh up --demo` left running, as a new user would (issue 21).

The hub runs as its own process on its embedded broker, with this benchmark's PostgreSQL
(embedded unless POSTGRES_URL), so what it stored can be counted. Every ``sample_s`` the
benchmark reads the broker's memory and CPU (its process), the delay from a message's making to
its row being committed (``created_at - event_time`` of the rows committed since the last
sample: the worker's lag, including every hold of a log roll), and the rolls `up` reported.
At the end it stops the hub and compares the messages the demo had acknowledged by the broker
with the rows PostgreSQL holds: equal is exactly once.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from rich.console import Console, RenderableType

from rtmh.bench.common import (
    Databases,
    bench_servers,
    child_env,
    figures_table,
    machine_info,
    now_iso,
    progress_bar,
)
from rtmh.bench.processes import RtmhProcess, log_tail
from rtmh.bench.stats import slope
from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.notify.targets import extend_allow_list
from rtmh.up.demo import RECEIVER_TARGET

SQL = load("bench")

#: targets of issue 21 (README, performance)
TARGET_BROKER_CPU = 25.0
TARGET_BROKER_RSS_MB = 300.0
TARGET_LAG_S = 1.0
#: "flat": the broker's memory grows by less than this over the second half of the run
FLAT_MB_PER_10_MIN = 10.0
#: the demo traffic starts with the worker, which needs a few seconds to join its consumer
#: group: lag in the samples of this first span is start-up, reported apart
WARMUP_S = 60.0

_ROLLED = re.compile(r"broker log rolled .*writes held (\d+) ms")
#: `up`'s 10-s summary line (view.summary): its lag is the messages the broker acknowledged
#: that the group has not committed (the gate's log ends minus the committed offsets)
_SUMMARY = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) in [\d,]+/s, written [\d,]+/s, "
    r"dead letters [\d,]+, lag ([\d,]+),",
    re.MULTILINE,
)
_DELIVERED = re.compile(r"demo traffic stopped: ([\d,]+) messages delivered, ([\d,]+) failed")


class SoakError(RuntimeError):
    """The hub did not start, or died during the run."""


@dataclass(frozen=True, slots=True)
class Sample:
    #: seconds since the hub was up
    t: float
    broker_rss_mb: float
    #: percent of one core since the previous sample
    broker_cpu: float
    hub_cpu: float
    #: rows committed since the previous sample, and their delays (None: no rows)
    rows: int
    lag_p99_s: float | None
    lag_max_s: float | None
    rolls: int


@dataclass
class SoakResult:
    minutes: float
    sample_s: float
    max_batches: int
    samples: list[Sample] = field(default_factory=list)
    delivered: int = 0
    failed: int = 0
    stored: int = 0
    dead_letters: int = 0
    rolls: int = 0
    max_hold_ms: int = 0
    #: consumer lag in messages from each of `up`'s summary lines after the warm-up
    consumer_lags: list[int] = field(default_factory=list)
    machine: dict[str, object] = field(default_factory=dict)
    finished_at: str = ""

    def second_half(self) -> list[Sample]:
        return [s for s in self.samples if s.t >= self.minutes * 30]

    def consumer_lag_max_s(self) -> float | None:
        """The largest consumer lag, in seconds of the demo's traffic."""
        rate = self.delivered / (self.minutes * 60) if self.minutes else 0.0
        if not self.consumer_lags or rate <= 0:
            return None
        return round(max(self.consumer_lags) / rate, 3)

    def rss_slope_mb_per_10_min(self) -> float | None:
        """Least-squares slope of the broker's memory over the second half of the run."""
        return slope([(s.t, s.broker_rss_mb) for s in self.second_half()], per=600.0)

    def figures(self) -> dict[str, Any]:
        half = self.second_half() or self.samples
        running = [s for s in self.samples if s.t > WARMUP_S]
        lags = [s.lag_max_s for s in running if s.lag_max_s is not None]
        startup = [s.lag_max_s for s in self.samples if s.t <= WARMUP_S and s.lag_max_s]
        cpus = [s.broker_cpu for s in self.samples]
        return {
            "broker_cpu_mean": round(sum(cpus) / len(cpus), 1) if cpus else None,
            "broker_cpu_max": max(cpus, default=None),
            "broker_rss_max_mb": max((s.broker_rss_mb for s in self.samples), default=None),
            "broker_rss_second_half_mb": [
                min((s.broker_rss_mb for s in half), default=None),
                max((s.broker_rss_mb for s in half), default=None),
            ],
            "broker_rss_slope_mb_per_10_min": self.rss_slope_mb_per_10_min(),
            "hub_cpu_mean": (
                round(sum(s.hub_cpu for s in self.samples) / len(self.samples), 1)
                if self.samples
                else None
            ),
            "lag_max_s": max(lags, default=None),
            "lag_p99_max_s": max(
                (s.lag_p99_s for s in running if s.lag_p99_s is not None), default=None
            ),
            "startup_lag_max_s": max(startup, default=None),
            "consumer_lag_max_messages": max(self.consumer_lags, default=None),
            "consumer_lag_max_s": self.consumer_lag_max_s(),
            "rolls": self.rolls,
            "max_hold_ms": self.max_hold_ms,
            "delivered": self.delivered,
            "failed": self.failed,
            "stored": self.stored,
            "dead_letters": self.dead_letters,
            "exactly_once": self.exactly_once,
        }

    @property
    def exactly_once(self) -> bool:
        return (
            self.failed == 0
            and self.delivered > 0
            and self.stored + self.dead_letters == self.delivered
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "minutes": self.minutes,
            "sample_s": self.sample_s,
            "max_batches": self.max_batches,
            "figures": self.figures(),
            "samples": [asdict(s) for s in self.samples],
            "machine": self.machine,
            "finished_at": self.finished_at,
        }


def _cpu_seconds(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def consumer_lags(text: str, warmup_s: float = WARMUP_S) -> list[int]:
    """The lag of each summary line `up` printed after the first ``warmup_s`` seconds."""
    found = [(datetime.fromisoformat(m.group(1)), m.group(2)) for m in _SUMMARY.finditer(text)]
    if not found:
        return []
    first = found[0][0]
    return [
        int(lag.replace(",", "")) for at, lag in found if (at - first).total_seconds() >= warmup_s
    ]


def _rolls(log_path: Path) -> list[int]:
    """The hold of each log roll `up` reported so far, in ms."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return []
    return [int(m.group(1)) for m in _ROLLED.finditer(text)]


def _wait_for(condition: Any, what: str, up: RtmhProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        up.check()
        if time.monotonic() > deadline:
            raise SoakError(
                f"{what} did not happen within {timeout:.0f} s:\n{log_tail(up.log_path)}"
            )
        time.sleep(0.2)


class _LagReader:
    """The delays of the rows committed since the last read (index raw_events(topic,
    created_at))."""

    def __init__(self, conn: psycopg.Connection, topics: list[str]):
        self.conn = conn
        self.topics = topics
        self.since = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]

    def read(self) -> tuple[int, float | None, float | None]:
        row = self.conn.execute(SQL.soak_lag, (self.topics, self.since)).fetchone()
        assert row is not None
        count, p99, worst, newest = row
        if newest is not None:
            self.since = newest
        return int(count), p99, worst


def run(
    settings: Settings,
    minutes: float,
    sample_s: float,
    max_batches: int | None,
    console: Console,
) -> SoakResult:
    bound = max_batches or settings.embedded_broker_max_batches
    result = SoakResult(minutes, sample_s, bound, machine=machine_info())
    with bench_servers(settings.postgres_url, None, console=console, broker=False) as servers:
        databases = Databases(servers.admin_url)
        try:
            _soak(result, settings, servers.workdir, databases.fresh("soak"), console)
        finally:
            databases.drop_all()
    result.finished_at = now_iso()
    return result


def _soak(
    result: SoakResult, settings: Settings, workdir: Path, url: str, console: Console
) -> None:
    data_dir = workdir / "data"
    env = child_env(
        settings,
        postgres_url=url,
        kafka_bootstrap_servers=None,
        data_dir=data_dir,
        embedded_broker_max_batches=result.max_batches,
        log_level="INFO",
        # `up` hands its settings to its notifier, which must reach the loopback demo receiver
        allowed_targets=extend_allow_list(settings.allowed_target_list, RECEIVER_TARGET),
    )
    log_path = workdir / "up.log"
    with RtmhProcess("up", env, log_path, args=["--demo"], stop_timeout_s=60) as up:
        _wait_for(lambda: "RTMH is up" in log_path.read_text(errors="replace"), "up", up)
        pid_file = data_dir / "run" / "broker.pid"
        broker = psutil.Process(int(pid_file.read_text().split()[0]))
        hub = psutil.Process(up.pid)
        _sample_until(result, up, broker, hub, url, settings, console)
        up.stop()
    text = log_path.read_text(errors="replace")
    found = _DELIVERED.search(text)
    if found is None:
        raise SoakError(f"`up` did not report its demo traffic:\n{log_tail(log_path)}")
    result.delivered = int(found.group(1).replace(",", ""))
    result.failed = int(found.group(2).replace(",", ""))
    result.consumer_lags = consumer_lags(text)
    holds = _rolls(log_path)
    result.rolls, result.max_hold_ms = len(holds), max(holds, default=0)
    with psycopg.connect(url) as conn:
        row = conn.execute(SQL.ingest_stored).fetchone()
        assert row is not None
        result.stored, result.dead_letters = int(row[0]), int(row[1])


def _sample_until(
    result: SoakResult,
    up: RtmhProcess,
    broker: psutil.Process,
    hub: psutil.Process,
    url: str,
    settings: Settings,
    console: Console,
) -> None:
    topics = list(settings.topic_kinds())
    started = time.monotonic()
    end = started + result.minutes * 60
    last = (started, _cpu_seconds(broker), _cpu_seconds(hub))
    with psycopg.connect(url, autocommit=True) as conn, progress_bar(console) as bar:
        lag = _LagReader(conn, topics)
        task = bar.add_task("soak: rtmh up --demo", total=round(result.minutes * 60), note="")
        while (now := time.monotonic()) < end:
            time.sleep(min(result.sample_s, max(0.0, end - now)))
            up.check()
            now = time.monotonic()
            b_cpu, h_cpu = _cpu_seconds(broker), _cpu_seconds(hub)
            dt = max(now - last[0], 1e-3)
            rows, p99, worst = lag.read()
            try:
                rss = broker.memory_info().rss / 2**20
            except psutil.Error as err:
                raise SoakError(f"the embedded broker went away: {err}") from None
            result.samples.append(
                Sample(
                    round(now - started, 1),
                    round(rss, 1),
                    round((b_cpu - last[1]) / dt * 100, 1),
                    round((h_cpu - last[2]) / dt * 100, 1),
                    rows,
                    None if p99 is None else round(p99, 3),
                    None if worst is None else round(worst, 3),
                    len(_rolls(up.log_path)),
                )
            )
            last = (now, b_cpu, h_cpu)
            last_sample = result.samples[-1]
            bar.update(
                task,
                completed=round(now - started),
                note=f"broker {last_sample.broker_rss_mb:.0f} MB, {last_sample.broker_cpu:.0f} % "
                f"cpu; {last_sample.rolls} rolls",
            )


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "[bold red]missed[/]")


def render(result: SoakResult) -> list[RenderableType]:
    f = result.figures()
    slope_ = f["broker_rss_slope_mb_per_10_min"]
    lo, hi = f["broker_rss_second_half_mb"]
    rows = [
        (
            f"broker CPU (% of a core, {result.sample_s:g}-s samples)",
            f"mean {f['broker_cpu_mean']}, max {f['broker_cpu_max']}",
            f"mean < {TARGET_BROKER_CPU:.0f}",
            _met(f["broker_cpu_mean"] is not None and f["broker_cpu_mean"] < TARGET_BROKER_CPU),
        ),
        (
            "broker RSS (MB)",
            f"max {f['broker_rss_max_mb']}; second half {lo} to {hi}, slope {slope_} MB/10 min",
            f"< {TARGET_BROKER_RSS_MB:.0f}, flat (< {FLAT_MB_PER_10_MIN:.0f} MB/10 min)",
            _met(
                f["broker_rss_max_mb"] is not None
                and f["broker_rss_max_mb"] < TARGET_BROKER_RSS_MB
                and (slope_ is None or slope_ < FLAT_MB_PER_10_MIN)
            ),
        ),
        (
            "worker lag (messages behind the broker, up's 10-s lines)",
            f"max {f['consumer_lag_max_messages']} = {f['consumer_lag_max_s']} s of traffic",
            f"< {TARGET_LAG_S:.0f} s throughout",
            _met(f["consumer_lag_max_s"] is not None and f["consumer_lag_max_s"] < TARGET_LAG_S),
        ),
        (
            "every row: made -> committed (s)",
            f"max {f['lag_max_s']}, worst p99 of a sample {f['lag_p99_max_s']} "
            f"(start-up: max {f['startup_lag_max_s']})",
            f"< {TARGET_LAG_S:.0f} throughout",
            _met(f["lag_max_s"] is not None and f["lag_max_s"] < TARGET_LAG_S),
        ),
        (
            "exactly once",
            f"{f['delivered']:,} delivered, {f['stored']:,} rows "
            f"(+{f['dead_letters']:,} dead letters), {f['failed']:,} failed",
            "rows + dead letters = delivered",
            _met(result.exactly_once),
        ),
        (
            "log rolls",
            f"{f['rolls']:,}, writes held at most {f['max_hold_ms']:,} ms",
            f"bound {result.max_batches:,} batches a partition",
            "",
        ),
        ("hub process CPU (gate, view)", f"mean {f['hub_cpu_mean']} %", "", ""),
    ]
    return [
        figures_table(
            f"rtmh bench up-soak: rtmh up --demo for {result.minutes:g} min",
            ("figure", "measured", "target", ""),
            rows,
            caption=f"machine: {result.machine.get('cpu_model', '?')}, "
            f"{result.machine.get('cpu_logical_cores', '?')} cores",
        )
    ]
