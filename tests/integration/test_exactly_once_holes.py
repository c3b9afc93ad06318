"""Exactly-once under the interleavings a quiet run never reaches (issue 23): a consumer position
that moves back by itself, and read-backs the broker does not answer or answers with a gap.

Real broker, real PostgreSQL. Where the fault cannot be made to happen on the embedded broker, it
is injected at the one place it enters: the consumer's position (as librdkafka moves it when it
resets an out-of-range position by itself) and the read-back's answer (a reader at a closed
port; a compacted log's gap).
"""

from __future__ import annotations

import socket
import threading

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
from prometheus_client import REGISTRY

from rtmh.ingest.worker import Worker
from rtmh.kafka.client import MessageReader
from rtmh.records import ReadBack, ReadOutcome
from rtmh.worker import window_stage
from tests.integration.ingest_support import (
    assert_exactly_once,
    in_thread,
    produce,
    settings_for,
    wait_for,
    wait_for_totals,
)


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def offsets(url: str, prefix: str) -> dict[tuple[str, int], tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT topic, kafka_partition, generation, next_offset FROM consumer_offsets"
            " WHERE group_id = %s",
            (f"g-{prefix}",),
        ).fetchall()
    return {(t, p): (g, n) for t, p, g, n in rows}


class RewindingWorker(Worker):
    """A worker whose consumer position jumps back to the log start once, when armed: what
    librdkafka did by itself under auto.offset.reset=earliest after OFFSET_OUT_OF_RANGE."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.arm = threading.Event()
        self.rewound = threading.Event()

    def _take(self, raw: list[Message]) -> None:
        super()._take(raw)
        if self.arm.is_set() and not self.rewound.is_set() and self._consumer is not None:
            for topic, partition in sorted(self.owned.generation):
                self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            self.rewound.set()


def test_a_position_moved_back_is_refused_and_nothing_is_stored_twice(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    cfg = settings_for(db_url, broker, topic_prefix)
    worker = RewindingWorker(cfg, db_url, broker, in_transaction=window_stage(cfg))
    fenced_before = counter("rtmh_ingest_fenced_batches_total")
    with in_thread(worker):
        first, _ = produce(broker, topic_prefix, 3_000)
        wait_for_totals(db_url, first, 0)
        stored_before = offsets(db_url, topic_prefix)
        worker.arm.set()
        wait_for(worker.rewound.is_set, 60, "the rewind")
        second, _ = produce(broker, topic_prefix, 1_000, start_seq=10_000)
        wait_for_totals(db_url, first + second, 0)
    assert_exactly_once(db_url, first + second, 0)
    after = offsets(db_url, topic_prefix)
    for part, (generation, next_offset) in stored_before.items():
        # the same log, the same generation, and offsets only ever moved forward
        assert after[part][0] == generation
        assert after[part][1] >= next_offset
    assert counter("rtmh_ingest_fenced_batches_total") > fenced_before


class FlakyReader:
    """A reader whose first answers come from a broker that is not there (a closed port): real
    librdkafka errors and timeouts. Then the real broker answers."""

    def __init__(self, bootstrap: str, closed: str, failures: int) -> None:
        self.real = MessageReader(bootstrap)
        self.dead = MessageReader(closed)
        self.failures = failures
        self.answers: list[ReadBack] = []

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack:
        reader = self.dead if len(self.answers) < self.failures else self.real
        answer = reader.read(topic, partition, offset, timeout=1.0)
        self.answers.append(answer)
        return answer

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        return self.real.watermarks(topic, partition)

    def close(self) -> None:
        self.real.close()
        self.dead.close()


class GapReader(FlakyReader):
    """Answers the read-back of offset n - 1 with the message at n, as a broker does when n - 1
    was compacted away: a later offset, the same log."""

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack:
        found = self.real.read(topic, partition, offset + 1, timeout=timeout)
        answer = ReadBack(ReadOutcome.LATER, found.message, "compacted") if found.message else found
        self.answers.append(answer)
        return answer


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def _restart_with(reader: FlakyReader, db_url: str, broker: str, prefix: str) -> int:
    """Stored messages from a first worker, then a second one that probes with ``reader``;
    returns how many messages were produced in all."""
    cfg = settings_for(db_url, broker, prefix)
    with in_thread(Worker(cfg, db_url, broker, in_transaction=window_stage(cfg))):
        first, _ = produce(broker, prefix, 2_000)
        wait_for_totals(db_url, first, 0)
    stored = offsets(db_url, prefix)
    assert stored and all(g == 0 for g, _ in stored.values())
    # produced before the second worker starts, so the message after each stored offset exists
    # when it is read back
    second, _ = produce(broker, prefix, 1_000, start_seq=10_000)
    second_worker = Worker(
        cfg,
        db_url,
        broker,
        in_transaction=window_stage(cfg),
        reader=reader,  # type: ignore[arg-type]
    )
    with in_thread(second_worker):
        wait_for_totals(db_url, first + second, 0)
    return first + second


def test_a_read_back_the_broker_does_not_answer_is_asked_again_never_a_reset(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    reader = FlakyReader(broker, closed_port(), failures=3)
    retries_before = counter("rtmh_ingest_probe_retries_total")
    resets_before = counter("rtmh_ingest_log_resets_total")
    try:
        total = _restart_with(reader, db_url, broker, topic_prefix)
    finally:
        reader.close()
    assert [a.outcome for a in reader.answers[:3]] == [ReadOutcome.UNKNOWN] * 3
    assert all(a.outcome is ReadOutcome.FOUND for a in reader.answers[3:])
    assert counter("rtmh_ingest_probe_retries_total") - retries_before >= 3
    assert counter("rtmh_ingest_log_resets_total") == resets_before
    assert all(g == 0 for g, _ in offsets(db_url, topic_prefix).values())
    assert_exactly_once(db_url, total, 0)


def test_a_gap_before_the_stored_offset_is_no_reset(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    reader = GapReader(broker, closed_port(), failures=0)
    try:
        total = _restart_with(reader, db_url, broker, topic_prefix)
    finally:
        reader.close()
    assert reader.answers and all(a.outcome is ReadOutcome.LATER for a in reader.answers)
    assert all(g == 0 for g, _ in offsets(db_url, topic_prefix).values())
    assert_exactly_once(db_url, total, 0)
