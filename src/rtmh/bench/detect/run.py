"""Running `rtmh bench detect`: servers, a fresh database, the worker, the traffic with its
bursts and the incident watcher; what the run saw goes to measure.py for its figures."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.progress import Progress, TaskID

from rtmh.bench.common import (
    SQL,
    BenchServers,
    bench_databases,
    now_iso,
    progress_bar,
    worker_env,
)
from rtmh.bench.detect.measure import figures, match
from rtmh.bench.detect.model import (
    DRAIN_TIMEOUT_S,
    RESOLVE_AFTER_SECONDS,
    RULE,
    DetectConfig,
    Observed,
    RuleParams,
    schedule,
)
from rtmh.bench.detect.traffic import BurstTraffic
from rtmh.bench.detect.watcher import Committed, Watcher
from rtmh.bench.processes import ChildProcess, CpuMeter, RtmhProcess, log_tail
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.embedded.log_roll import LogRoller, RollOutcome, RollPolicy
from rtmh.up.demo import DEMO_CHANNEL

DEMO_SQL = load("demo")

#: how long the worker may take to join its group and commit the first message
JOIN_TIMEOUT_S = 90.0
#: the traffic's producer batches this long, as `rtmh up`'s demo does. The embedded broker's
#: CPU and its log rolls go with the number of producer batches, not of messages: at 10,000
#: msg/s, 5 ms made four times the batches, a roll every ~11 s and the broker at 56 % of a core
#: (measured). Every latency reported includes it: the clock starts when a line is produced.
PRODUCER_LINGER_MS = 20


def run(settings: Settings, config: DetectConfig, console: Console) -> dict[str, Any]:
    """One run on the servers the settings name (embedded ones otherwise); its figures."""
    started_at = now_iso()
    # the embedded broker runs behind the gate with its log bounded, as `rtmh up` runs it: left
    # unbounded at 10,000 msg/s its CPU passes a core within a minute (issue 15)
    with bench_databases(settings, console, gated=True) as (srv, dbs):
        url = dbs.fresh("detect")
        observed = _Run(settings, config, console, srv, url, started_at).observe()
        return figures(observed, srv, url)


def configure_rule(url: str) -> RuleParams:
    """Only RULE enabled, with a short resolve period; its parameters, checked to be the kind
    of rule the traffic models."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL.enable_only_rule, {"rule": RULE})
        row = conn.execute(
            SQL.configure_rule, {"rule": RULE, "resolve": RESOLVE_AFTER_SECONDS}
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


def route_rule_to(url: str, receiver: ArrivalReceiver) -> None:
    """configure_rule sends the rule to the demo's channel: point it at ``receiver`` (signed
    with its secret)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            DEMO_SQL.upsert_demo_channel,
            (
                DEMO_CHANNEL,
                Jsonb({"url": receiver.url, "timeout_seconds": 5}),
                Jsonb({"hmac_secret": receiver.secret}),
            ),
        )


def wait_committed(
    url: str, committed: Committed, produced: int, check: Callable[[], None]
) -> float:
    """Seconds until the group has committed ``produced`` messages; ``check()`` between polls
    raises to give up (the worker died, or too long)."""
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while committed.read(conn) < produced:
            check()
            time.sleep(0.05)
    return time.monotonic() - started


def give_up_after(
    worker: ChildProcess, timeout: float, why: Callable[[], str]
) -> Callable[[], None]:
    """A ``check`` for wait_committed: raises once the worker has exited, or RuntimeError(why())
    once ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout

    def check() -> None:
        worker.check()
        if time.monotonic() > deadline:
            raise RuntimeError(why())

    return check


def wait_first_commit(
    url: str, worker: ChildProcess, traffic: BurstTraffic, committed: Committed
) -> None:
    """Produce one message and wait until the worker has committed it (group joined,
    partitions assigned): the start of a run's clock. Gives up after JOIN_TIMEOUT_S."""
    traffic.first_message()
    traffic.producer.flush(10)
    check = give_up_after(
        worker,
        JOIN_TIMEOUT_S,
        lambda: (
            f"the worker committed nothing within {JOIN_TIMEOUT_S:.0f} s; log "
            f"tail:\n{log_tail(worker.log_path)}"
        ),
    )
    wait_committed(url, committed, traffic.produced, check)


def bound_broker_log(
    cleanup: ExitStack,
    srv: BenchServers,
    settings: Settings,
    url: str,
    group: str,
    topics: list[str],
    on_roll: Callable[[RollOutcome], None],
) -> None:
    """Roll the embedded broker's topics as `rtmh up` does, until ``cleanup`` unwinds (enter
    it after the worker, so the roller stops first); nothing on a broker the user brought."""
    if srv.gate is None:
        return
    roller = LogRoller(
        srv.gate,
        srv.bootstrap,
        url,
        group,
        topics,
        settings.partitions,
        RollPolicy(max_batches=settings.embedded_broker_max_batches),
        on_roll,
    )
    roller.start()
    cleanup.callback(roller.stop)


def run_topics(
    cleanup: ExitStack, srv: BenchServers, prefix: str, partitions: int
) -> dict[str, str]:
    """The run's own topic of each kind, created now and, on a broker the user brought, deleted
    when ``cleanup`` unwinds (an embedded broker goes away with its data)."""
    from rtmh.kafka.client import ensure_topics

    topics = {k: f"{prefix}{k}" for k in ("logs", "metrics", "events")}
    ensure_topics(srv.bootstrap, list(topics.values()), partitions)
    if not srv.embedded_broker:
        cleanup.callback(delete_topics_quietly, srv.bootstrap, list(topics.values()))
    return topics


def delete_topics_quietly(bootstrap: str, topics: list[str]) -> None:
    """Best effort: leave nothing behind on a broker the user brought."""
    from confluent_kafka.admin import AdminClient

    with contextlib.suppress(Exception):
        futures = AdminClient({"bootstrap.servers": bootstrap}).delete_topics(
            topics, operation_timeout=10
        )
        for future in futures.values():
            with contextlib.suppress(Exception):
                future.result(10)


@dataclass
class _Run:
    settings: Settings
    config: DetectConfig
    console: Console
    srv: BenchServers
    url: str
    started_at: str
    group: str = field(default_factory=lambda: f"rtmh-bench-detect-{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"benchdetect{uuid.uuid4().hex[:8]}.")
    #: produced/committed counts when the warm-up ends (t0) and when the traffic stops (t1)
    window: dict[str, float] = field(default_factory=dict)
    cpu_percent: dict[str, float] = field(default_factory=dict)
    #: the embedded broker's log rolls during the run
    rolls: list[RollOutcome] = field(default_factory=list)
    committed: Committed = field(init=False)

    def __post_init__(self) -> None:
        self.committed = Committed(self.group)

    def observe(self) -> Observed:
        from rtmh.kafka.client import make_producer

        s = self.settings
        rule = configure_rule(self.url)
        env = worker_env(s, self.url, self.srv.bootstrap, self.prefix, self.group)
        load_before = os.getloadavg()
        with ExitStack() as cleanup:
            topics = run_topics(cleanup, self.srv, self.prefix, s.partitions)
            producer = make_producer(self.srv.bootstrap, **{"linger.ms": PRODUCER_LINGER_MS})
            traffic = BurstTraffic(
                self.config,
                topics,
                producer,
                rule,
                s.window_size_s,
                s.window_slide_s,
                schedule(self.config),
            )
            watcher = Watcher(self.url, rule.id, self.committed, lambda: traffic.produced)
            cleanup.callback(_flush_quietly, producer)
            worker = cleanup.enter_context(
                RtmhProcess("worker", env, self.srv.workdir / "worker.log", own_session=True)
            )
            self._bound_broker_log(cleanup, list(topics.values()))
            cleanup.callback(watcher.stop_event.set)
            ran, join_s, drain_s = self._measured(traffic, watcher, worker, producer)
        return Observed(
            settings=s,
            config=self.config,
            rule=rule,
            bursts=traffic.bursts,
            events=watcher.snapshot(),
            started_at=self.started_at,
            traffic_started_wall=traffic.started_wall,
            ran_s=ran,
            produced=traffic.produced,
            window=self.window,
            join_s=join_s,
            drain_s=drain_s,
            max_lag=watcher.max_lag,
            rolls=[r for r in self.rolls if r.rolled],
            cpu_percent=self.cpu_percent,
            load_before=load_before,
            load_after=os.getloadavg(),
        )

    def _bound_broker_log(self, cleanup: ExitStack, topics: list[str]) -> None:
        bound_broker_log(
            cleanup, self.srv, self.settings, self.url, self.group, topics, self._rolled
        )

    def _rolled(self, outcome: RollOutcome) -> None:
        self.committed.rolled(outcome)
        self.rolls.append(outcome)

    def _measured(
        self, traffic: BurstTraffic, watcher: Watcher, worker: RtmhProcess, producer: Any
    ) -> tuple[float, float, float]:
        """Worker joined, traffic run, everything committed: (traffic s, join s, drain s)."""
        join_s = self._wait_for_worker(worker, traffic)
        switch = sys.getswitchinterval()
        sys.setswitchinterval(0.001)  # the watcher's clock must not wait for the producer
        try:
            watcher.start()
            ran = self._traffic(traffic, watcher, worker, CpuMeter(worker.pid))
            remaining = producer.flush(30)
            if remaining or traffic.failed:
                raise RuntimeError(
                    f"{remaining} messages undelivered, {traffic.failed} failed "
                    f"({traffic.first_error_note or 'timed out'})"
                )
            with self.console.status("waiting for the worker to commit everything produced"):
                drain_s = wait_committed(
                    self.url,
                    self.committed,
                    traffic.produced,
                    give_up_after(
                        worker,
                        DRAIN_TIMEOUT_S,
                        lambda: (
                            f"the worker did not catch up within {DRAIN_TIMEOUT_S:.0f} s "
                            f"after the traffic stopped; log tail:\n{log_tail(worker.log_path)}"
                        ),
                    ),
                )
            time.sleep(0.2)  # an incident committed with the last messages is still seen
            watcher.stop()
            if watcher.error is not None:
                raise RuntimeError(f"incident watcher failed: {watcher.error}")
        finally:
            sys.setswitchinterval(switch)
        return ran, join_s, drain_s

    def _wait_for_worker(self, worker: RtmhProcess, traffic: BurstTraffic) -> float:
        """Until the worker has committed a first message (group joined, partitions assigned)."""
        with self.console.status("starting the worker and waiting for its first commit"):
            started = time.monotonic()
            wait_first_commit(self.url, worker, traffic, self.committed)
            return time.monotonic() - started

    def _traffic(
        self, traffic: BurstTraffic, watcher: Watcher, worker: RtmhProcess, cpu: CpuMeter
    ) -> float:
        """Runs the traffic with a progress bar until every burst is detected (or the tail has
        passed); records the measured span in ``window``; returns the traffic's seconds."""
        bursts = traffic.bursts
        with progress_bar(self.console) as progress:
            task = progress.add_task("bursts detected", total=len(bursts), note="warming up")
            ran = traffic.run(
                self._until(traffic, watcher, cpu),
                lambda t: self._tick(t, progress, task, traffic, watcher, worker),
            )
            self.window.update(t1=ran, produced1=traffic.produced, committed1=watcher.committed)
            self.cpu_percent = cpu.end()
            done = detected(traffic, watcher)
            progress.update(task, completed=done, note=f"{ran:.0f} s, traffic stopped")
        return ran

    def _until(
        self, traffic: BurstTraffic, watcher: Watcher, cpu: CpuMeter
    ) -> Callable[[float], bool]:
        c = self.config
        last_end = traffic.bursts[-1].end
        window = self.window

        def until(t: float) -> bool:
            if "t0" not in window and t >= c.warmup_s:
                window.update(t0=t, produced0=traffic.produced, committed0=watcher.committed)
                cpu.begin()
            if t < last_end:
                return False
            return t >= last_end + c.tail_s or detected(traffic, watcher) == len(traffic.bursts)

        return until

    def _tick(
        self,
        t: float,
        progress: Progress,
        task: TaskID,
        traffic: BurstTraffic,
        watcher: Watcher,
        worker: RtmhProcess,
    ) -> None:
        worker.check()
        if watcher.error is not None:
            raise RuntimeError(f"incident watcher failed: {watcher.error}")
        current = traffic.burst_at(t)
        where = f"burst {current.index + 1} on {current.service}" if current else ""
        lag = traffic.produced - watcher.committed
        progress.update(
            task,
            completed=detected(traffic, watcher),
            note=f"{t:5.0f} s  {traffic.produced:>9,} sent  lag {lag:>7,}  {where}",
        )


def detected(traffic: BurstTraffic, watcher: Watcher) -> int:
    """Bursts the watcher has seen an incident for so far."""
    match(traffic.bursts, watcher.snapshot())
    return sum(b.detected for b in traffic.bursts)


def _flush_quietly(producer: Any) -> None:
    with contextlib.suppress(Exception):
        producer.flush(2)
