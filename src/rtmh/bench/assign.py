"""`rtmh bench assign`: from a worker's start to its first commit when it is assigned many
partitions that hold stored offsets (issue 15).

Each case runs in a fresh database and on topics of its own. A first worker stores ``MESSAGES``
messages of each of the log topic's partitions and stops; then the case is set up and a second
worker is timed from its start to its first commit:

- ``intact``: one more message on each partition; every start reads the message before its
  stored offset back and finds the one stored (the log is the same);
- ``reset``: the topic is deleted and created again with one message a partition (a new log,
  shorter than the stored offsets, as an embedded broker that restarted empty holds), and the
  worker decides its starts without knowing the topic ids (as right after a restart, when the
  broker did not answer the id request): each read-back gets no answer (the embedded broker is
  silent on a fetch beyond its log's end) until the ids, asked again, settle it.

The group join (about 3 s with the default session timeout) is part of the time to the first
commit; the time spent deciding the starts, and the read-back rounds (calls of the reader's
``read_many``, which ``read`` also goes through), are reported beside it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import msgspec
import psycopg
from confluent_kafka import TopicPartition
from rich.console import Console
from rich.table import Table

from rtmh.bench.common import bench_databases, figures_table, machine_info, now_iso
from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.ingest.batch import Batch, Partition
from rtmh.ingest.store import StoredOffset, load_offsets
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import (
    MessageReader,
    delete_topics,
    ensure_topics,
    make_admin,
    make_producer,
)
from rtmh.records import ReadBack, WindowKey
from rtmh.worker import build_worker, window_keys, window_stage

SQL = load("bench")

CASES = ("intact", "reset")
#: messages stored on each partition before the timed start
MESSAGES = 3
#: the longest the bench waits for a worker to commit what it must (a stalled worker fails the
#: run instead of hanging it); the old code took ~2.5 s a partition on a reset
PHASE_TIMEOUT_S = 1800.0


@dataclass
class CaseResult:
    case: str
    partitions: int
    #: worker start -> its first commit
    first_commit_s: float
    #: worker start -> its starts decided (the group join and the decisions)
    decided_s: float
    #: the time spent deciding the starts on the first assignment
    decide_s: float
    #: calls to the reader: one a partition before issue 15, one a set after it
    read_rounds: int
    #: partitions asked in those calls
    reads: int
    #: partitions started again under a new generation
    resets: int


class CountingReader(MessageReader):
    """The real reader, counting how often it is asked and for how many partitions."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.rounds = 0
        self.reads = 0

    def read_many(
        self, wanted: Mapping[tuple[str, int], int], timeout: float = 2.0
    ) -> dict[tuple[str, int], ReadBack]:
        self.rounds += 1
        self.reads += len(wanted)
        return super().read_many(wanted, timeout)


class TimedWorker(Worker):
    """A worker that notes when its first assignment's starts were decided; with
    ``ids_unknown`` it decides them the first time as if the broker had not said the topic ids."""

    def __init__(self, *args: Any, ids_unknown: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ids_unknown = ids_unknown
        self.decisions: list[tuple[float, float]] = []  # (began, ended), monotonic

    def _decide(
        self, parts: list[Partition], ids: dict[str, str] | None, recreated: dict[str, str]
    ) -> list[TopicPartition]:
        began = time.monotonic()
        if self.ids_unknown and not self.decisions:
            ids = None
        try:
            return super()._decide(parts, ids, recreated)
        finally:
            self.decisions.append((began, time.monotonic()))


def run(settings: Settings, partitions: int, cases: list[str], console: Console) -> dict[str, Any]:
    started_at = now_iso()
    results: list[CaseResult] = []
    with bench_databases(settings) as (srv, databases):
        for case in cases:
            url = databases.fresh(case)
            with console.status(f"{case}: {partitions} partitions"):
                results.append(_case(settings, url, srv.bootstrap, case, partitions))
            databases.drop(url)
    return {
        "started_at": started_at,
        "machine": machine_info(),
        "servers": srv.describe(),
        "partitions": partitions,
        "messages_per_partition": MESSAGES,
        "cases": {r.case: asdict(r) for r in results},
    }


def _case(settings: Settings, url: str, bootstrap: str, case: str, partitions: int) -> CaseResult:
    prefix = f"bench-assign-{uuid.uuid4().hex[:8]}."
    cfg = settings.model_copy(
        update={
            "postgres_url": url,
            "kafka_bootstrap_servers": bootstrap,
            "topic_prefix": prefix,
            "log_topics": "",
            "metric_topics": "",
            "event_topics": "",
            "group_id": f"bench-assign-{case}",
            "metrics_port": 0,
        }
    )
    logs = f"{prefix}logs"
    admin = make_admin(bootstrap)
    # every partition that matters is the log topic's; the other kinds are there, empty
    ensure_topics(bootstrap, [logs], partitions, admin=admin, quiet=True)
    ensure_topics(bootstrap, [f"{prefix}metrics", f"{prefix}events"], 1, admin=admin, quiet=True)
    try:
        _produce(bootstrap, logs, partitions, MESSAGES)
        _until(url, cfg, lambda o: _all_at(o, logs, partitions, 0, MESSAGES), "the first worker")
        if case == "reset":
            delete_topics(admin, [logs])
            ensure_topics(bootstrap, [logs], partitions, admin=admin, quiet=True)
        _produce(bootstrap, logs, partitions, 1)
        reader = CountingReader(bootstrap)
        worker = TimedWorker(
            cfg,
            url,
            bootstrap,
            in_transaction=window_stage(cfg),
            touched_by=window_keys(cfg),
            reader=reader,
            ids_unknown=case == "reset",
        )
        committed = threading.Event()
        commits: list[float] = []

        def first(_batch: Batch, _touched: set[WindowKey]) -> None:
            if not commits:
                commits.append(time.monotonic())
            committed.set()

        worker.after_commit.append(first)
        gen, end = (1, 1) if case == "reset" else (0, MESSAGES + 1)
        began = time.monotonic()
        thread = threading.Thread(target=worker.run, name="bench-assign-worker", daemon=True)
        thread.start()
        try:
            if not committed.wait(PHASE_TIMEOUT_S):
                raise RuntimeError(f"{case}: no commit in {PHASE_TIMEOUT_S:.0f} s")
            stored = _wait_offsets(url, cfg, lambda o: _all_at(o, logs, partitions, gen, end))
        finally:
            worker.stop()
            thread.join(120)
    finally:
        delete_topics(admin, [logs, f"{prefix}metrics", f"{prefix}events"])
    decided_at, decide_s = worker.decisions[0][1], worker.decisions[0][1] - worker.decisions[0][0]
    return CaseResult(
        case=case,
        partitions=partitions,
        first_commit_s=commits[0] - began,
        decided_s=decided_at - began,
        decide_s=decide_s,
        read_rounds=reader.rounds,
        reads=reader.reads,
        resets=sum(1 for (t, _), row in stored.items() if t == logs and row.generation > 0),
    )


def _produce(bootstrap: str, topic: str, partitions: int, each: int) -> None:
    producer = make_producer(bootstrap)
    for p in range(partitions):
        for i in range(each):
            body = {"ts": time.time(), "service": "bench", "level": "info", "msg": f"{p}/{i}"}
            producer.produce(topic, msgspec.json.encode(body), partition=p)
    if producer.flush(60) != 0:
        raise RuntimeError(f"could not produce to {topic}")


Offsets = dict[Partition, StoredOffset]


def _all_at(stored: Offsets, topic: str, partitions: int, generation: int, end: int) -> bool:
    return all(
        (row := stored.get((topic, p))) is not None
        and row.generation == generation
        and row.next_offset == end
        for p in range(partitions)
    )


def _offsets(url: str, cfg: Settings) -> Offsets:
    with psycopg.connect(url) as conn:
        return load_offsets(conn, cfg.group_id, list(cfg.topic_kinds()))


def _wait_offsets(url: str, cfg: Settings, done: Callable[[Offsets], bool]) -> Offsets:
    deadline = time.monotonic() + PHASE_TIMEOUT_S
    while time.monotonic() < deadline:
        stored = _offsets(url, cfg)
        if done(stored):
            return stored
        time.sleep(0.1)
    raise RuntimeError(f"the offsets did not reach what was produced in {PHASE_TIMEOUT_S:.0f} s")


def _until(url: str, cfg: Settings, done: Callable[[Offsets], bool], what: str) -> None:
    """Run a worker until the stored offsets satisfy ``done``."""
    worker = build_worker(cfg, url, cfg.kafka_bootstrap_servers or "", rules=False)
    thread = threading.Thread(target=worker.run, name=f"bench-assign {what}", daemon=True)
    thread.start()
    try:
        _wait_offsets(url, cfg, done)
    finally:
        worker.stop()
        thread.join(120)


def render(result: dict[str, Any]) -> list[Table]:
    rows = [
        [
            name,
            str(c["partitions"]),
            f"{c['first_commit_s']:.2f}",
            f"{c['decided_s']:.2f}",
            f"{c['decide_s']:.2f}",
            str(c["read_rounds"]),
            str(c["reads"]),
            str(c["resets"]),
        ]
        for name, c in result["cases"].items()
    ]
    m = result["machine"]
    caption = (
        f"{result['messages_per_partition']} messages stored on each partition before the start; "
        "the group join is part of the time to the first commit.\n"
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores; broker "
        f"{result['servers']['broker']}"
    )
    return [
        figures_table(
            "rtmh bench assign: worker start -> first commit",
            [
                "case",
                "partitions",
                "first commit s",
                "starts decided s",
                "deciding s",
                "read rounds",
                "reads",
                "resets",
            ],
            rows,
            caption,
        )
    ]
