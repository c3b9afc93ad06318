"""The embedded broker's log, bounded by rolling its topics (issue 21): a real tansu behind its
gate, a real `rtmh worker`, rolls while messages keep coming, and every message stored once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from rtmh.embedded.broker import EmbeddedBroker
from rtmh.embedded.frames import topic_id_bytes
from rtmh.embedded.log_roll import LogRoller, RollOutcome, RollPolicy
from rtmh.kafka.client import delete_topics, ensure_topics, make_admin, make_producer, topic_ids
from tests.integration.ingest_support import (
    KINDS,
    assert_exactly_once,
    produce,
    settings_for,
    start_worker,
    wait_for_totals,
    worker_env,
)

PARTITIONS = 4
ROUND = 600

#: a plain librdkafka consumer in a process of its own (a SIGSEGV must not take pytest with it):
#: it says when it has read the first log, then reads ``after`` messages of the new log and ends
#: (after five minutes without them it gives up, so that a consumer stuck on the old id fails
#: the test instead of hanging it).
#: It keeps its position across the roll (tansu then answers with nothing until the new log
#: reaches it, no out-of-range): so the new log must grow past the old one's end.
CONSUMER = """
import sys, time
from confluent_kafka import Consumer
bootstrap, topic, before, after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "group.id": topic, "auto.offset.reset": "earliest",
              "fetch.wait.max.ms": 10, "reconnect.backoff.ms": 10, "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 1000})
c.subscribe([topic])
seen = {b"before": set(), b"after": set()}
give_up = time.monotonic() + 300
while len(seen[b"after"]) < after:
    if time.monotonic() > give_up:
        sys.exit("stuck: nothing of the new log")
    for m in c.consume(100, 0.2):
        if m.error() is None:
            seen[m.value().split(b"-")[0]].add(m.value())
            if len(seen[b"before"]) == before and m.value().startswith(b"before"):
                print("read the first log", flush=True)
print("read the new log", flush=True)
"""


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    server = EmbeddedBroker(tmp_path / "broker", gated=True)
    server.start()
    yield server
    server.stop()


def _roller(
    server: EmbeddedBroker, url: str, prefix: str, policy: RollPolicy
) -> tuple[LogRoller, list[RollOutcome]]:
    assert server.gate is not None
    settings = settings_for(url, server.bootstrap, prefix)
    outcomes: list[RollOutcome] = []
    roller = LogRoller(
        server.gate,
        server.bootstrap,
        url,
        settings.group_id,
        list(settings.topic_kinds()),
        PARTITIONS,
        policy,
        outcomes.append,
    )
    return roller, outcomes


def test_gate_knows_each_log_end_and_holds_writes_until_released(
    gated: EmbeddedBroker, topic_prefix: str
) -> None:
    assert gated.gate is not None
    topic = topic_prefix + "logs"
    ensure_topics(gated.bootstrap, [topic], 2)
    producer = make_producer(gated.bootstrap)
    for i in range(300):
        producer.produce(topic, f"m{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0

    ends = gated.gate.hold(10)
    assert ends == {(topic, 0): 150, (topic, 1): 150}
    # what a consumer finds at the end of each log: the gate's ends are the broker's
    consumer = Consumer({"bootstrap.servers": gated.bootstrap, "group.id": topic_prefix})
    consumer.assign([TopicPartition(topic, 0, 149), TopicPartition(topic, 1, 149)])
    seen: set[tuple[int, int]] = set()
    while len(seen) < 2:
        for msg in consumer.consume(10, 1.0):
            assert msg.error() is None
            seen.add((msg.partition() or 0, msg.offset() or 0))
    consumer.close()
    assert seen == {(0, 149), (1, 149)}

    delivered = threading.Event()
    producer.produce(topic, b"held", partition=0, on_delivery=lambda e, m: delivered.set())
    gated.gate.release()
    assert producer.flush(30) == 0 and delivered.is_set()
    stats = gated.gate.stats()
    assert stats.logs[(topic, 0)].end == 151 and stats.acknowledged == 301


def test_rolls_under_a_worker_lose_and_duplicate_nothing(
    gated: EmbeddedBroker, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Rolls happen between rounds of messages (a round is about one batch a partition); the
    worker reads each new log from its start, and PostgreSQL ends up holding every message
    exactly once."""
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env(db_url, gated.bootstrap, topic_prefix), log)
    roller, outcomes = _roller(
        gated,
        db_url,
        topic_prefix,
        RollPolicy(max_batches=5, min_interval_s=0.5, retry_s=0.5, catch_up_timeout_s=30),
    )
    roller.start()
    produced = 0
    alive = lambda: worker.poll() is None  # noqa: E731
    try:
        # rounds, each stored before the next (so the worker keeps up and rolls can happen),
        # until three rolls happened, then one more round on the last new log
        for _ in range(60):
            produce(gated.bootstrap, topic_prefix, ROUND, start_seq=produced)
            produced += ROUND
            if roller.rolls >= 3:
                break
            wait_for_totals(db_url, produced, 0, alive=alive, log=log)
        assert roller.rolls >= 3, f"only {roller.rolls} rolls: {[o.line() for o in outcomes]}"
        produce(gated.bootstrap, topic_prefix, ROUND, start_seq=produced)
        produced += ROUND
        wait_for_totals(db_url, produced, 0, alive=alive, log=log)
    finally:
        roller.stop()
        worker.terminate()
        worker.wait(60)
    assert_exactly_once(db_url, produced, 0)
    assert gated.gate is not None and gated.gate.stats().acknowledged == produced


def test_no_roll_while_the_group_has_not_committed_everything(
    gated: EmbeddedBroker, db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    """Without a worker nothing is committed: the roll gives up, deletes nothing, and lets the
    writes through; a worker started later stores every message."""
    good, _ = produce(gated.bootstrap, topic_prefix, 300, partitions=PARTITIONS)
    roller, _ = _roller(
        gated, db_url, topic_prefix, RollPolicy(catch_up_timeout_s=0.5, drain_timeout_s=5)
    )
    outcome = roller.roll("asked by the test")
    assert not outcome.rolled
    assert f"group g-{topic_prefix} had not committed everything" in outcome.detail
    # the writes go on after a roll that did not happen
    more, _ = produce(gated.bootstrap, topic_prefix, 30, start_seq=good)
    log = tmp_path / "worker.log"
    worker = start_worker(worker_env(db_url, gated.bootstrap, topic_prefix), log)
    try:
        wait_for_totals(db_url, good + more, 0, alive=lambda: worker.poll() is None, log=log)
    finally:
        worker.terminate()
        worker.wait(60)
    assert_exactly_once(db_url, good + more, 0)
    assert {t for t, _ in (gated.gate.stats().logs if gated.gate else {})} <= {
        topic_prefix + k for k in KINDS
    }


def test_a_fetch_for_a_rolled_topics_old_id_never_reaches_the_broker(
    gated: EmbeddedBroker, topic_prefix: str
) -> None:
    """The roll closes every connection so that clients learn the new topic ids; here it does
    not (as for a connection the close missed), so the consumer's next fetch names the deleted
    topic's id. tansu's answer to that kills librdkafka 2.16 with SIGSEGV (measured: without the
    gate's check this consumer exits with -11); the gate answers UNKNOWN_TOPIC_ID in its place,
    which librdkafka reads without complaint, and the consumer reads the new log."""
    gate_ = gated.gate
    assert gate_ is not None
    topic = topic_prefix + "logs"
    ensure_topics(gated.bootstrap, [topic], 2)
    producer = make_producer(gated.bootstrap)
    for i in range(100):
        producer.produce(topic, f"before-{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, gated.bootstrap, topic, "100", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "read the first log"
        admin = make_admin(gated.bootstrap)
        old = topic_id_bytes(topic_ids(gated.bootstrap, [topic], admin=admin)[topic])
        # the roll's steps, without its closing of the connections
        assert gate_.hold(10) is not None and gate_.hold_fetches(10)
        delete_topics(admin, [topic])
        ensure_topics(gated.bootstrap, [topic], 2, admin=admin, quiet=True)
        gate_.release([topic], [old])
        for i in range(300):
            producer.produce(topic, f"after-{i}".encode(), partition=i % 2)
        assert producer.flush(30) == 0
        line = consumer.stdout.readline().strip()
        assert line == "read the new log", f"the consumer ended with {consumer.wait(60)}"
        assert consumer.wait(60) == 0
    finally:
        consumer.kill()
        _, errors = consumer.communicate()
    assert gate_.stats().stale_fetches >= 1
    # the gate's answer is a well-formed Fetch response: no parse failure, no reconnect
    assert "parse" not in errors.lower() and "Disconnected" not in errors, errors


def test_writes_are_not_held_while_the_group_is_far_behind(
    gated: EmbeddedBroker, db_url: str, topic_prefix: str
) -> None:
    """A group that could not catch up within the hold (here: no worker at all) is not waited
    for with writes held: the roll says how far behind it is and holds nothing."""
    good, _ = produce(gated.bootstrap, topic_prefix, 300, partitions=PARTITIONS)
    roller, _ = _roller(gated, db_url, topic_prefix, RollPolicy(max_behind=100))
    outcome = roller.roll("asked by the test")
    assert not outcome.rolled and outcome.held_s == 0
    assert f"group g-{topic_prefix} is {good:,} messages behind (more than 100)" in outcome.detail
    assert gated.gate is not None and gated.gate.stats().rolls == 0
