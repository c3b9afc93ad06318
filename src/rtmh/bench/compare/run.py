"""Running `rtmh bench compare`: the exporter, the webhook receivers, Prometheus + Alertmanager
per profile, the RTMH worker and notifier, then one traffic run that feeds them all."""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import Progress, TaskID

from rtmh.bench.common import (
    BenchServers,
    bench_databases,
    notifier_env,
    progress_bar,
    worker_env,
)
from rtmh.bench.compare.measure import detections, spans
from rtmh.bench.compare.model import (
    QUIET_SERVICE,
    RTMH,
    Arrival,
    CompareConfig,
    Observed,
    Profile,
    Timeline,
    schedule,
    timeline,
)
from rtmh.bench.compare.peer import Binaries, PeerPair, firing_services
from rtmh.bench.compare.traffic import CompareTraffic, Exporter, quiet_phase
from rtmh.bench.detect.model import DetectConfig
from rtmh.bench.detect.run import (
    PRODUCER_LINGER_MS,
    bound_broker_log,
    configure_rule,
    route_rule_to,
    run_topics,
    wait_first_commit,
)
from rtmh.bench.detect.watcher import Committed
from rtmh.bench.processes import RtmhProcess
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.config import Settings
from rtmh.db.queries import load

DEMO_SQL = load("demo")


class Arrivals:
    """Every firing alert each receiver had, in arrival order (receivers' threads append)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Arrival] = []

    def add(self, system: str, services: list[str], at: float) -> None:
        with self._lock:
            self.items.extend(Arrival(system, s, at) for s in services)

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.items)

    def rtmh_body(self, at: float, body: bytes) -> None:
        """RTMH's webhook: an 'open' notification (new or reopened incident) is an alert."""
        try:
            doc = json.loads(body)
        except ValueError:
            return
        if isinstance(doc, dict) and doc.get("event") == "open":
            service = (doc.get("incident") or {}).get("service")
            if isinstance(service, str):
                self.add(RTMH, [service], at)

    def peer_body(self, system: str) -> Callable[[float, bytes], None]:
        return lambda at, body: self.add(system, firing_services(body), at)


def run(
    settings: Settings, config: CompareConfig, binaries: Binaries | None, console: Console
) -> Observed:
    """One run on the servers the settings name (embedded ones otherwise); what it saw."""
    with bench_databases(settings, console, gated=True) as (srv, dbs):
        url = dbs.fresh("compare")
        return _Run(settings, config, binaries, console, srv, url).observe()


@dataclass
class _Run:
    settings: Settings
    config: CompareConfig
    binaries: Binaries | None
    console: Console
    srv: BenchServers
    url: str
    group: str = field(default_factory=lambda: f"rtmh-bench-compare-{uuid.uuid4().hex[:8]}")
    prefix: str = field(default_factory=lambda: f"benchcompare{uuid.uuid4().hex[:8]}.")
    arrivals: Arrivals = field(default_factory=Arrivals)

    def observe(self) -> Observed:
        from rtmh.kafka.client import make_producer

        s, c = self.settings, self.config
        profiles = c.chosen() if self.binaries is not None else []
        line = timeline(c)
        services = c.services()
        rule = configure_rule(self.url)
        committed = Committed(self.group)
        with ExitStack() as stack:
            topics = run_topics(stack, self.srv, self.prefix, s.partitions)
            exporter = stack.enter_context(Exporter(services))
            peers = [self._peer(stack, p, exporter) for p in profiles]
            producer = make_producer(self.srv.bootstrap, **{"linger.ms": PRODUCER_LINGER_MS})
            stack.callback(producer.flush, 5)
            traffic = CompareTraffic(
                _detect_config(c, line, len(services)),
                topics,
                producer,
                rule,
                s.window_size_s,
                s.window_slide_s,
                schedule(c, line),
                services=services,
                weights=c.weights(),
                phases=(quiet_phase(QUIET_SERVICE),),
                exporter=exporter,
                quiet=QUIET_SERVICE,
                quiet_at=line.quiet_error_at,
            )
            hub = self._hub(stack, committed, topics)
            self._wait_until_ready(hub[0], traffic, committed, peers)
            ran = self._traffic(traffic, line, profiles, [*hub, *peers])
            stopped_at = time.time()
        return Observed(
            config=c,
            timeline=line,
            profiles=profiles,
            bursts=traffic.bursts,
            arrivals=self.arrivals.snapshot(),
            traffic_started_wall=traffic.started_wall,
            stopped_at=stopped_at,
            ran_s=ran,
            produced=traffic.produced,
            quiet_error_sent=traffic.quiet_error_sent,
            requests=dict(exporter.totals),
            window_size_s=s.window_size_s,
            window_slide_s=s.window_slide_s,
            rule={
                "name": "high_error_rate",
                "threshold": rule.threshold,
                "min_count": rule.min_count,
            },
        )

    def _peer(self, stack: ExitStack, profile: Profile, exporter: Exporter) -> PeerPair:
        assert self.binaries is not None
        receiver = stack.enter_context(
            ArrivalReceiver(on_body=self.arrivals.peer_body(profile.system))
        )
        return stack.enter_context(
            PeerPair(
                profile,
                self.binaries,
                exporter.target,
                receiver.url,
                self.srv.workdir / f"peer-{profile.name}",
            )
        )

    def _hub(
        self, stack: ExitStack, committed: Committed, topics: dict[str, str]
    ) -> list[RtmhProcess]:
        """RTMH's receiver, worker and notifier (and the broker's log bound, as `rtmh up`).
        configure_rule routed high_error_rate to the demo's channel: it points at ours."""
        s, secret = self.settings, secrets.token_hex(16)
        receiver = stack.enter_context(ArrivalReceiver(secret, on_body=self.arrivals.rtmh_body))
        route_rule_to(self.url, receiver)
        env = worker_env(s, self.url, self.srv.bootstrap, self.prefix, self.group)
        work = self.srv.workdir
        worker = stack.enter_context(
            RtmhProcess("worker", env, work / "worker.log", own_session=True)
        )
        notifier = stack.enter_context(
            RtmhProcess(
                "notifier", notifier_env(s, self.url), work / "notifier.log", own_session=True
            )
        )
        bound_broker_log(
            stack, self.srv, s, self.url, self.group, list(topics.values()), committed.rolled
        )
        return [worker, notifier]

    def _wait_until_ready(
        self,
        worker: RtmhProcess,
        traffic: CompareTraffic,
        committed: Committed,
        peers: list[PeerPair],
    ) -> None:
        with self.console.status("starting the worker, Prometheus and Alertmanager"):
            wait_first_commit(self.url, worker, traffic, committed)
            for peer in peers:
                peer.wait_ready()

    def _traffic(
        self,
        traffic: CompareTraffic,
        line: Timeline,
        profiles: list[Profile],
        children: list[RtmhProcess | PeerPair],
    ) -> float:
        """Traffic until every system detected every burst (after the last one ended) or the
        last deadline passed; returns the seconds it ran."""
        deadlines = {RTMH: line.deadline_s, **{p.system: p.deadline_s for p in profiles}}
        last_end = max(b.end for b in traffic.bursts)

        def all_detected() -> bool:
            found = _detected(traffic, self.arrivals.snapshot(), deadlines)
            return found == len(traffic.bursts) * len(deadlines)

        def until(t: float) -> bool:
            return t >= line.end_s or (t >= last_end and all_detected())

        with progress_bar(self.console) as progress:
            task = progress.add_task(
                "bursts detected", total=len(traffic.bursts) * len(deadlines), note=""
            )

            def tick(t: float) -> None:
                traffic.plant_due(t)
                for child in children:
                    child.check()
                self._show(progress, task, t, traffic, deadlines)

            ran = traffic.run(until, tick)
            self._show(progress, task, ran, traffic, deadlines)
        return ran

    def _show(
        self,
        progress: Progress,
        task: TaskID,
        t: float,
        traffic: CompareTraffic,
        deadlines: dict[str, float],
    ) -> None:
        current = traffic.burst_at(t)
        where = f"burst {current.index + 1} on {current.service}" if current else ""
        progress.update(
            task,
            completed=_detected(traffic, self.arrivals.snapshot(), deadlines),
            note=f"{t:5.0f} s  {traffic.produced:>8,} sent  {where}",
        )


def _detected(traffic: CompareTraffic, arrivals: list[Arrival], deadlines: dict[str, float]) -> int:
    """(burst, system) pairs with a webhook so far."""
    live = spans(traffic.bursts, time.time())
    return sum(
        v is not None
        for system, deadline in deadlines.items()
        for v in detections(live, arrivals, system, deadline).values()
    )


def _detect_config(c: CompareConfig, line: Timeline, services: int) -> DetectConfig:
    """Bench detect's traffic parameters for this run (its burst traffic is reused as is)."""
    return DetectConfig(
        bursts=c.bursts,
        rate=c.rate,
        services=services,
        burst_errors=c.burst_errors,
        base_errors=c.base_errors,
        burst_seconds=line.burst_s,
        warmup_s=line.warmup_s,
        seed=c.seed,
    )
