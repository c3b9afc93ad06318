"""Running `rtmh bench soak`: the servers (embedded unless POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS),
the hub as a deployment runs it (two workers in one group, a notifier, the broker's log bound as
`rtmh up` keeps it), a webhook receiver, the traffic and the chaos loop; then the settle and the
end checks."""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID

from rtmh.bench.common import (
    BenchServers,
    bench_databases,
    machine_info,
    notifier_env,
    now_iso,
    progress_bar,
    worker_env,
)
from rtmh.bench.detect.model import BASE_ERROR_RATIO, Burst, DetectConfig, RuleParams
from rtmh.bench.detect.run import (
    PRODUCER_LINGER_MS,
    bound_broker_log,
    configure_rule,
    route_rule_to,
    run_topics,
    wait_first_commit,
)
from rtmh.bench.detect.watcher import Committed
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.bench.soak import checks as end
from rtmh.bench.soak.chaos import Chaos, Fleet, postgres_pids
from rtmh.bench.soak.memory import Sampler
from rtmh.bench.soak.model import (
    FAULTS,
    RESTART_POSTGRES,
    WORKERS,
    Fault,
    SoakConfig,
    SoakResult,
    burst_schedule,
    fault_schedule,
)
from rtmh.bench.soak.traffic import SoakTraffic
from rtmh.config import Settings
from rtmh.embedded.log_roll import RollOutcome
from rtmh.kafka.client import make_producer

#: after the traffic stops: every message stored within this long, then every incident
#: resolved and notification delivered within SETTLE_TIMEOUT_S (a retry may wait out its
#: backoff, which grows to a minute after a receiver's outage)
STORE_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 300.0


def run(settings: Settings, config: SoakConfig, short: bool, console: Console) -> SoakResult:
    """One soak on the servers the settings name (embedded ones otherwise)."""
    result = SoakResult(config, short, machine=machine_info())
    with bench_databases(settings, console, gated=True) as (srv, dbs):
        url = dbs.fresh("soak")
        try:
            _Run(settings, config, console, srv, url, result).go()
        except (RuntimeError, end.NotSettled) as err:
            # what was measured until then is still reported (an hour is not thrown away)
            result.error = str(err)
        if not result.passed():
            # the servers' directory goes when bench_databases ends; the processes' logs are
            # what a failed hour is understood from
            result.logs = keep_logs(srv.workdir)
    result.finished_at = now_iso()
    return result


def keep_logs(workdir: Path) -> str:
    """A copy of the run's process logs (worker-1.log, notifier.log, ...) in a directory of its
    own that outlives the run."""
    kept = Path(tempfile.mkdtemp(prefix="rtmh-soak-logs-"))
    for log_file in sorted(workdir.glob("*.log")):
        shutil.copy2(log_file, kept / log_file.name)
    return str(kept)


@dataclass
class _Run:
    settings: Settings
    config: SoakConfig
    console: Console
    srv: BenchServers
    url: str
    result: SoakResult
    group: str = field(default_factory=lambda: f"rtmh-bench-soak-{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"benchsoak{uuid.uuid4().hex[:8]}.")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def go(self) -> None:
        s = self.settings
        bursts, faults = self._plan()
        rule = configure_rule(self.url)
        committed = Committed(self.group)
        with ExitStack() as stack:
            topics = run_topics(stack, self.srv, self.prefix, s.partitions)
            receiver = stack.enter_context(ArrivalReceiver(secrets.token_hex(16)))
            route_rule_to(self.url, receiver)
            started = time.monotonic()
            fleet = Fleet(self.srv.workdir, self._envs(), lambda: time.monotonic() - started)
            stack.callback(fleet.stop)
            bound_broker_log(
                stack,
                self.srv,
                s,
                self.url,
                self.group,
                list(topics.values()),
                lambda outcome: self._rolled(outcome, committed),
            )
            producer = make_producer(self.srv.bootstrap, **{"linger.ms": PRODUCER_LINGER_MS})
            stack.callback(producer.flush, 10)
            traffic = self._traffic_for(bursts, topics, producer, rule)
            with self.console.status("starting two workers and a notifier"):
                wait_first_commit(self.url, fleet.procs[WORKERS[0]], traffic, committed)
            self._traffic(traffic, fleet, receiver, faults)
            producer.flush(30)
            try:
                self._settle(traffic, fleet)
                self._check(traffic, receiver)
            finally:
                self.result.checks.crashes = [c.describe() for c in fleet.crashes]
                if self.srv.gate is not None:
                    self.result.stale_fetches = self.srv.gate.stats().stale_fetches

    def _plan(self) -> tuple[list[Burst], list[Fault]]:
        """The bursts and the faults; no PostgreSQL restarts on a server the bench does not own."""
        kinds: tuple[str, ...] = FAULTS
        if self.srv.postgres is None:
            kinds = tuple(k for k in FAULTS if k != RESTART_POSTGRES)
            self.result.skipped.append(
                "PostgreSQL restarts: POSTGRES_URL names a server this benchmark does not own"
            )
        bursts = burst_schedule(self.config)
        faults = fault_schedule(self.config, kinds, bursts)
        self.result.faults_planned = faults
        self.result.bursts = len(bursts)
        return bursts, faults

    def _traffic_for(
        self, bursts: list[Burst], topics: dict[str, str], producer: Any, rule: RuleParams
    ) -> SoakTraffic:
        c = self.config
        return SoakTraffic(
            DetectConfig(
                bursts=len(bursts),
                rate=c.rate,
                services=c.services,
                burst_errors=c.burst_errors,
                base_errors=BASE_ERROR_RATIO,
                burst_seconds=c.burst_s,
                warmup_s=0.0,
                seed=c.seed,
            ),
            topics,
            producer,
            rule,
            self.settings.window_size_s,
            self.settings.window_slide_s,
            bursts,
            services=c.service_list(),
            bad_every=c.bad_every,
        )

    def _envs(self) -> dict[str, dict[str, str]]:
        s = self.settings
        worker = worker_env(s, self.url, self.srv.bootstrap, self.prefix, self.group)
        notifier = notifier_env(s, self.url, log_level="INFO")
        return {WORKERS[0]: worker, WORKERS[1]: dict(worker), "notifier": notifier}

    def _rolled(self, outcome: RollOutcome, committed: Committed) -> None:
        committed.rolled(outcome)
        if outcome.rolled:
            with self._lock:
                self.result.rolls += 1
                self.result.max_hold_ms = max(self.result.max_hold_ms, round(outcome.held_s * 1000))

    def _traffic(
        self,
        traffic: SoakTraffic,
        fleet: Fleet,
        receiver: ArrivalReceiver,
        faults: list[Fault],
    ) -> None:
        """The traffic on a thread of its own, the faults, samples and checks on this one (the
        processes the faults restart must be this thread's children: see Chaos)."""
        c = self.config
        started = time.monotonic()
        broker_pid = self.srv.pids.get("broker")

        def pids() -> dict[str, int | None]:
            return {
                **{name: fleet.pid(name) for name in (*WORKERS, "notifier")},
                "broker": broker_pid,
            }

        fleet.clock = lambda: time.monotonic() - started
        sampler = Sampler(pids, lambda: postgres_pids(self.srv.postgres), time.monotonic)
        producing = _TrafficThread(traffic, c.duration_s)
        with progress_bar(self.console) as progress:
            task = progress.add_task("soak", total=round(c.duration_s), note="")
            next_sample = [c.sample_s]
            chaos: Chaos

            def idle() -> None:
                fleet.check()
                producing.check()
                t = time.monotonic() - started
                if t >= next_sample[0]:
                    next_sample[0] += c.sample_s
                    self.result.memory.append(sampler.sample(t))
                self._show(progress, task, t, traffic, len(chaos.done), len(faults))

            chaos = Chaos(
                faults, fleet, self.srv.postgres, receiver, started, progress.console.print, idle
            )
            self.result.memory.append(sampler.sample(0.0))
            producing.start()
            try:
                chaos.run(started + c.duration_s)
            finally:
                producing.finish()
                self.result.faults = chaos.done
            self.result.ran_s = producing.ran_s
            self.result.memory.append(sampler.sample(time.monotonic() - started))
            self._show(progress, task, self.result.ran_s, traffic, len(chaos.done), len(faults))

    def _show(
        self,
        progress: Progress,
        task: TaskID,
        t: float,
        traffic: SoakTraffic,
        done: int,
        planned: int,
    ) -> None:
        progress.update(
            task,
            completed=min(round(t), round(self.config.duration_s)),
            note=f"{traffic.produced:>9,} sent, {traffic.bad:,} malformed; faults {done}/{planned}",
        )

    def _settle(self, traffic: SoakTraffic, fleet: Fleet) -> None:
        """Every message stored, then every incident resolved and notification final."""
        began = time.monotonic()
        rows = traffic.good - len(traffic.failed_good)
        letters = traffic.bad - len(traffic.failed_bad)
        last: list[tuple[int, int]] = [(0, 0)]

        def stored() -> bool:
            last[0] = end.stored_counts(self.url)
            return last[0][0] >= rows and last[0][1] >= letters

        with self.console.status("waiting for every message to be stored"):
            end.wait_until(
                stored,
                STORE_TIMEOUT_S,
                lambda: (
                    f"after {STORE_TIMEOUT_S:.0f} s PostgreSQL holds {last[0][0]:,} of "
                    f"{rows:,} rows and {last[0][1]:,} of {letters:,} dead letters; see the "
                    "worker logs"
                ),
                fleet.check,
            )
        open_now: list[tuple[int, int]] = [(0, 0)]

        def settled() -> bool:
            open_now[0] = end.unsettled(self.url)
            return open_now[0] == (0, 0)

        with self.console.status("waiting for incidents to resolve and notifications to go"):
            end.wait_until(
                settled,
                SETTLE_TIMEOUT_S,
                lambda: (
                    f"after {SETTLE_TIMEOUT_S:.0f} s {open_now[0][0]} incident(s) still "
                    f"live and {open_now[0][1]} notification(s) not delivered; see "
                    f"{fleet.log_path('notifier')}"
                ),
                fleet.check,
            )
        self.result.settle_s = time.monotonic() - began

    def _check(self, traffic: SoakTraffic, receiver: ArrivalReceiver) -> None:
        checks = self.result.checks
        with self.console.status("checking every message, window and notification"):
            end.check_messages(self.url, traffic, checks)
            end.check_alerts(
                self.url, traffic.bursts, self.config.burst_s, traffic.started_wall, checks
            )
            end.check_notifications(self.url, receiver, checks)
            end.check_windows(
                self.url,
                self.prefix,
                self.settings.window_size_s,
                self.settings.window_slide_s,
                checks,
            )


class _TrafficThread(threading.Thread):
    """``traffic.run`` for ``duration_s``, or until ``finish()``; its error, if any, is raised
    by ``check()`` on the main thread."""

    def __init__(self, traffic: SoakTraffic, duration_s: float):
        super().__init__(name="soak-traffic", daemon=True)
        self.traffic = traffic
        self.duration_s = duration_s
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.ran_s = 0.0

    def run(self) -> None:
        try:
            self.ran_s = self.traffic.run(
                lambda t: t >= self.duration_s or self.stopping.is_set(), lambda _t: None
            )
        except BaseException as err:  # handed to the main thread by check()
            self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"the traffic stopped: {self.error}") from self.error
        if not self.is_alive() and self.ran_s < self.duration_s and not self.stopping.is_set():
            raise RuntimeError("the traffic stopped early")

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)
        if self.error is not None:
            raise RuntimeError(f"the traffic stopped: {self.error}") from self.error
