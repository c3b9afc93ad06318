"""A worker assigned 100 partitions with stored offsets decides every start from one read-back of
the set (issue 15): intact logs continue, new logs start again under the next generation, and a
read-back the broker does not answer is asked again for the set, never taken for a reset.

Real broker, real PostgreSQL. Waits are on rows in PostgreSQL; what is asserted is what
PostgreSQL holds and how often the reader was asked, never a time.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

import psycopg
from confluent_kafka import TopicPartition
from prometheus_client import REGISTRY

from rtmh.ingest.batch import Partition
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import (
    MessageReader,
    delete_topics,
    ensure_topics,
    make_admin,
    make_producer,
)
from rtmh.records import ReadBack, ReadOutcome
from rtmh.worker import window_stage
from tests.integration.ingest_support import (
    good_message,
    in_thread,
    settings_for,
    wait_for_rows,
)

#: partitions of each of the two topics with stored offsets: 2 x 50 = 100
PARTITIONS = 50
#: messages stored on each partition by the first worker
STORED = 3


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def counter(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


class CountingReader(MessageReader):
    """The real reader, keeping every set it was asked for and the answers it gave."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.calls: list[dict[tuple[str, int], ReadBack]] = []

    def read_many(
        self, wanted: Mapping[tuple[str, int], int], timeout: float = 2.0
    ) -> dict[tuple[str, int], ReadBack]:
        answers = super().read_many(wanted, timeout)
        self.calls.append(answers)
        return answers


class IdsUnknownAtFirst(Worker):
    """Decides its first assignment without the topic ids, as right after a broker restart when
    the id request was not answered: every start then depends on its read-back."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.decided = 0

    def _decide(
        self, parts: list[Partition], ids: dict[str, str] | None, recreated: dict[str, str]
    ) -> list[TopicPartition]:
        self.decided += 1
        return super()._decide(parts, None if self.decided == 1 else ids, recreated)


def produce_each(bootstrap: str, topic: str, kind: str, count: int, first_seq: int) -> None:
    """``count`` messages on every partition of ``topic``, by a producer of its own (one that
    knew a topic before it was created again must not be used on it: issue 24)."""
    producer = make_producer(bootstrap)
    for p in range(PARTITIONS):
        for i in range(count):
            seq = first_seq + p * count + i
            producer.produce(topic, good_message(kind, seq, f"svc{p % 8}"), partition=p)
    assert producer.flush(60) == 0


def offsets(url: str, group: str) -> dict[Partition, tuple[int, int]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT topic, kafka_partition, generation, next_offset FROM consumer_offsets"
            " WHERE group_id = %s",
            (group,),
        ).fetchall()
    return {(t, p): (g, n) for t, p, g, n in rows}


def stored_rows(url: str) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(generation, offset) of every raw_events row, by (topic, partition)."""
    found: dict[tuple[str, int], list[tuple[int, int]]] = {}
    with psycopg.connect(url) as conn:
        for t, p, g, o in conn.execute(
            "SELECT topic, kafka_partition, generation, kafka_offset FROM raw_events"
        ):
            found.setdefault((t, p), []).append((g, o))
    return {part: sorted(rows) for part, rows in found.items()}


def test_a_hundred_partitions_are_read_back_as_one_set_intact_and_reset_alike(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    intact, renewed = f"{topic_prefix}logs", f"{topic_prefix}metrics"
    admin = make_admin(broker)
    ensure_topics(broker, [intact, renewed], PARTITIONS, admin=admin)
    ensure_topics(broker, [f"{topic_prefix}events"], 1, admin=admin)
    cfg = settings_for(db_url, broker, topic_prefix)
    first = 2 * PARTITIONS * STORED
    with in_thread(Worker(cfg, db_url, broker, in_transaction=window_stage(cfg))):
        produce_each(broker, intact, "logs", STORED, 0)
        produce_each(broker, renewed, "metrics", STORED, 0)
        wait_for_rows(db_url, first, f"{first} rows from the first worker")
    before = offsets(db_url, cfg.group_id)
    assert len(before) == 2 * PARTITIONS and set(before.values()) == {(0, STORED)}

    # a new log under one topic, shorter than its stored offsets: the embedded broker is silent
    # on a read-back beyond its end; one more message on each intact partition
    delete_topics(admin, [renewed])
    ensure_topics(broker, [renewed], PARTITIONS, admin=admin)
    produce_each(broker, renewed, "metrics", 1, 10_000)
    produce_each(broker, intact, "logs", 1, 20_000)

    resets_before = counter("rtmh_ingest_log_resets_total")
    retries_before = counter("rtmh_ingest_probe_retries_total")
    reader = CountingReader(broker)
    worker = IdsUnknownAtFirst(cfg, db_url, broker, in_transaction=window_stage(cfg), reader=reader)
    with in_thread(worker):
        wait_for_rows(db_url, first + 2 * PARTITIONS, "the second worker's rows")
    reader.close()

    # one read-back of the whole set; any later one only for partitions left unanswered
    parts = {(t, p) for t in (intact, renewed) for p in range(PARTITIONS)}
    assert reader.calls and set(reader.calls[0]) == parts
    for earlier, later in zip(reader.calls, reader.calls[1:], strict=False):
        unanswered = {part for part, back in earlier.items() if back.outcome is ReadOutcome.UNKNOWN}
        assert set(later) <= unanswered
    silent = sum(
        back.outcome is ReadOutcome.UNKNOWN for call in reader.calls for back in call.values()
    )
    assert counter("rtmh_ingest_probe_retries_total") - retries_before == silent
    # the new logs were never taken for intact ones, nor the intact ones for new ones
    assert all(
        reader.calls[0][(renewed, p)].outcome is ReadOutcome.UNKNOWN for p in range(PARTITIONS)
    )
    assert counter("rtmh_ingest_log_resets_total") - resets_before == PARTITIONS

    after = offsets(db_url, cfg.group_id)
    assert {after[(intact, p)] for p in range(PARTITIONS)} == {(0, STORED + 1)}
    assert {after[(renewed, p)] for p in range(PARTITIONS)} == {(1, 1)}
    rows = stored_rows(db_url)
    for p in range(PARTITIONS):
        assert rows[(intact, p)] == [(0, o) for o in range(STORED + 1)]
        assert rows[(renewed, p)] == [*((0, o) for o in range(STORED)), (1, 0)]


class DeadFirst(CountingReader):
    """Its first read-back of the set goes to a broker that is not there (a closed port): real
    librdkafka errors and timeouts for every partition. Then the real broker answers."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.dead = MessageReader(closed_port())

    def read_many(
        self, wanted: Mapping[tuple[str, int], int], timeout: float = 2.0
    ) -> dict[tuple[str, int], ReadBack]:
        if self.calls:
            return super().read_many(wanted, timeout)
        answers = self.dead.read_many(wanted, timeout=0.5)
        self.calls.append(answers)
        return answers

    def close(self) -> None:
        super().close()
        self.dead.close()


def test_a_set_the_broker_does_not_answer_is_asked_again_as_a_set_never_a_reset(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    cfg = settings_for(db_url, broker, topic_prefix)
    topics = [f"{topic_prefix}{kind}" for kind in ("logs", "metrics", "events")]
    ensure_topics(broker, topics, 4)
    with in_thread(Worker(cfg, db_url, broker, in_transaction=window_stage(cfg))):
        for topic, kind in zip(topics, ("logs", "metrics", "events"), strict=True):
            producer = make_producer(broker)
            for p in range(4):
                producer.produce(topic, good_message(kind, p, "svc"), partition=p)
            assert producer.flush(60) == 0
        wait_for_rows(db_url, 12, "12 rows from the first worker")
    resets_before = counter("rtmh_ingest_log_resets_total")
    reader = DeadFirst(broker)
    worker = Worker(cfg, db_url, broker, in_transaction=window_stage(cfg), reader=reader)
    with in_thread(worker):
        producer = make_producer(broker)
        for topic, kind in zip(topics, ("logs", "metrics", "events"), strict=True):
            for p in range(4):
                producer.produce(topic, good_message(kind, 100 + p, "svc"), partition=p)
        assert producer.flush(60) == 0
        wait_for_rows(db_url, 24, "the second worker's rows")
    reader.close()
    # no answer for any: the set is asked again, whole, with the same ids (nothing proves a reset)
    assert len(reader.calls) >= 2 and [len(call) for call in reader.calls[:2]] == [12, 12]
    assert all(back.outcome is ReadOutcome.UNKNOWN for back in reader.calls[0].values())
    assert counter("rtmh_ingest_log_resets_total") == resets_before
    assert set(offsets(db_url, cfg.group_id).values()) == {(0, 2)}


def test_a_reader_answers_each_partition_of_a_set_every_time_it_is_asked(
    broker: str, topic_prefix: str
) -> None:
    """A partition answered in one set is answered again in the next (the reader pauses it once
    its answer is in; a pause that outlived the assignment silenced it for good)."""
    topic = f"{topic_prefix}logs"
    ensure_topics(broker, [topic], 3)
    producer = make_producer(broker)
    for p in range(3):
        for i in range(3):
            producer.produce(topic, good_message("logs", i, "svc"), partition=p)
    assert producer.flush(60) == 0
    reader = MessageReader(broker)
    try:
        for _ in range(2):
            answers = reader.read_many({(topic, 0): 0, (topic, 1): 2, (topic, 2): 3})
            outcomes = {p: answers[(topic, p)].outcome for p in range(3)}
            # partition 2 holds offsets 0..2: the broker says its log ends at 3
            assert outcomes == {0: ReadOutcome.FOUND, 1: ReadOutcome.FOUND, 2: ReadOutcome.MISSING}
            assert reader.read(topic, 0, 1).outcome is ReadOutcome.FOUND
    finally:
        reader.close()


def test_a_topic_the_broker_does_not_know_does_not_hide_the_others_watermarks(
    broker: str, topic_prefix: str
) -> None:
    """librdkafka fails a whole ListOffsets request for one unknown topic (gone in a reset), and
    only once its leader lookup gives up: up to 3 s from a new client, past the deadline."""
    topic = f"{topic_prefix}logs"
    ensure_topics(broker, [topic], 3)
    for k in range(3):
        reader = MessageReader(broker)  # a new client each time: its first lookup is the slow one
        try:
            gone = (f"{topic_prefix}nothing{k}", 0)
            marks = reader.watermarks_many([(topic, 2), gone])
            assert marks[gone] is None
            assert marks[(topic, 2)] == reader.watermarks(topic, 2)
        finally:
            reader.close()
