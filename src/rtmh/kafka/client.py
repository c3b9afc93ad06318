"""confluent-kafka configuration and helpers; the rest of RTMH never sees a librdkafka dict.

Settings chosen from what was measured against the embedded broker (DESIGN.md): a 6 s session
timeout makes a group join take ~3 s instead of ~23 s, and a 1 s heartbeat lets a surviving
worker take over a killed worker's partitions within ~8 s.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from rtmh.records import KafkaMessage, ReadBack, ReadOutcome

log = logging.getLogger(__name__)


#: the broker does not hold a fetch position (with auto.offset.reset=error librdkafka reports it
#: as _AUTO_OFFSET_RESET instead of moving the position by itself)
OUT_OF_RANGE = (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE)


def _common(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "socket.keepalive.enable": True,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 2000,
        "logger": logging.getLogger("librdkafka"),
    }


def consumer_config(
    bootstrap: str, group_id: str, *, session_timeout_ms: int = 6000, **extra: Any
) -> dict[str, Any]:
    return {
        **_common(bootstrap),
        "group.id": group_id,
        # offsets live in PostgreSQL; Kafka's own commit would only be a hint, so none is made
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        # every start is an explicit offset (decided from PostgreSQL); a position the broker calls
        # out of range is an error the worker decides on, never a silent jump to the log start
        # that would re-read what is stored (issue 23)
        "auto.offset.reset": "error",
        "session.timeout.ms": session_timeout_ms,
        "heartbeat.interval.ms": max(250, session_timeout_ms // 6),
        # a PostgreSQL outage can hold a batch for minutes; staying in the group keeps partitions
        "max.poll.interval.ms": 30 * 60 * 1000,
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 50,
        # Prefetch: once the local queue passes queued.min.messages (100k), librdkafka postpones
        # the next fetch by fetch.queue.backoff.ms, 1 s by default, and a worker that drains
        # the queue faster then stalls in 200 ms gaps: ingest benchmark 123k -> 149k events/s
        # with 20 ms (measured against the embedded broker).
        "fetch.queue.backoff.ms": 20,
        # ~300k typical messages; bounds the prefetch of large ones (worker RSS < 300 MB)
        "queued.max.messages.kbytes": 64 * 1024,
        "partition.assignment.strategy": "range",
        **extra,
    }


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {
        **_common(bootstrap),
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "acks": "all",
        **extra,
    }


def make_producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer(producer_config(bootstrap, **extra))


def make_consumer(
    bootstrap: str, group_id: str, *, session_timeout_ms: int = 6000, **extra: Any
) -> Consumer:
    return Consumer(
        consumer_config(bootstrap, group_id, session_timeout_ms=session_timeout_ms, **extra)
    )


def make_admin(bootstrap: str) -> AdminClient:
    """An admin client to keep: the worker checks its topics every few seconds from the poll
    loop, and a new client each time is a new connection and thread start-up on that loop."""
    return AdminClient(_common(bootstrap))


def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    timeout: float = 10,
    admin: AdminClient | None = None,
    *,
    quiet: bool = False,
) -> list[str]:
    """Create the topics that do not exist; returns the ones created (logged unless
    ``quiet``: the log roll says what it did in its own line)."""
    admin = admin or make_admin(bootstrap)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing],
        operation_timeout=timeout,
    )
    created: list[str] = []
    for topic, future in futures.items():
        try:
            future.result(timeout)
            created.append(topic)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    if created and not quiet:
        log.info("created topics %s with %d partitions", ", ".join(created), partitions)
    return created


def delete_topics(admin: AdminClient, topics: Iterable[str], timeout: float = 10) -> None:
    """Delete ``topics`` and wait for the broker's answer; one missing already is no error."""
    futures = admin.delete_topics(list(topics), operation_timeout=timeout)
    for future in futures.values():
        try:
            future.result(timeout)
        except KafkaException as err:
            if err.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise


def topic_ids(
    bootstrap: str, topics: Iterable[str], timeout: float = 10, admin: AdminClient | None = None
) -> dict[str, str]:
    """The id of each topic that exists (base64, as Kafka tools print it).

    A topic deleted and created again keeps its name but gets a new id, and its log starts again
    at offset 0: the id tells the two apart where offsets cannot. Topics the broker does not
    have, does not describe to us, or reports without an id (brokers before Kafka 2.8), are left
    out. Raises KafkaException or TimeoutError when the broker did not answer."""
    admin = admin or make_admin(bootstrap)
    futures = admin.describe_topics(TopicCollection(list(topics)), request_timeout=timeout)
    ids: dict[str, str] = {}
    for topic, future in futures.items():
        try:
            topic_id = future.result(timeout).topic_id
        except KafkaException as exc:
            err = exc.args[0]
            # negative codes are the client's own (transport, timeout): no answer from the broker
            if err.code() != KafkaError.UNKNOWN_TOPIC_OR_PART and (
                err.code() < 0 or err.retriable()
            ):
                raise
            continue
        if topic_id.get_most_significant_bits() or topic_id.get_least_significant_bits():
            ids[topic] = str(topic_id)
    return ids


def wait_for_broker(bootstrap: str, timeout: float = 30) -> None:
    admin = AdminClient(_common(bootstrap))
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=2)
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise


def to_record(msg: Message) -> KafkaMessage:
    ts_type, ts = msg.timestamp()
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return KafkaMessage(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value(),
        timestamp_ms=ts if ts_type != 0 and ts > 0 else None,
    )


class MessageReader:
    """Reads single messages by offset, outside any consumer group (used to verify offsets)."""

    def __init__(self, bootstrap: str):
        self._consumer = Consumer(
            {
                **_common(bootstrap),
                "group.id": f"rtmh-probe-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack:
        """Read the message at ``offset`` back. Only the broker's own words make it MISSING (no
        such partition, out of range, the end of its log before ``offset``); an error or no
        answer within ``timeout`` is UNKNOWN, never taken for an absence."""
        known = self._refresh(topic, partition, timeout)
        if known is not None:
            return known
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                msg = self._consumer.poll(0.1)
                if msg is None:
                    continue
                err = msg.error()
                got = msg.offset()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # on a real Kafka, the end of the log; the embedded broker's high
                        # watermark under-reports, but it answers a fetch below its end with
                        # messages, not with an end (measured)
                        if got is not None and 0 <= got <= offset:
                            return ReadBack(ReadOutcome.MISSING, detail=f"the log ends at {got}")
                        continue
                    if err.code() in (
                        KafkaError._AUTO_OFFSET_RESET,
                        KafkaError.OFFSET_OUT_OF_RANGE,
                    ):
                        return ReadBack(ReadOutcome.MISSING, detail=err.str())
                    return ReadBack(ReadOutcome.UNKNOWN, detail=err.str())
                if got == offset:
                    return ReadBack(ReadOutcome.FOUND, to_record(msg))
                if got is not None and got > offset:
                    return ReadBack(ReadOutcome.LATER, to_record(msg))
            return ReadBack(ReadOutcome.UNKNOWN, detail=f"no answer within {timeout:g} s")
        finally:
            self._consumer.unassign()

    def _refresh(self, topic: str, partition: int, timeout: float) -> ReadBack | None:
        """Fetch the topic's metadata now; the answer when it already settles the read (no such
        partition: MISSING; no metadata: UNKNOWN), else None.

        Never fetch with what the handle cached earlier: after a broker restart the cache still
        holds the old topic id, tansu answers a fetch for an unknown id with topic id zero and a
        CurrentLeader hint, and librdkafka (2.16) turns that hint into a metadata update that it
        looks up by a NULL topic name: SIGSEGV in its main thread (issue 24)."""
        try:
            topics = self._consumer.list_topics(topic, timeout=timeout).topics
        except KafkaException as err:
            return ReadBack(ReadOutcome.UNKNOWN, detail=f"no metadata: {err}")
        meta = topics.get(topic)
        if meta is None or (
            meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            return ReadBack(ReadOutcome.MISSING, detail="the broker has no such topic")
        if meta.error is not None:
            return ReadBack(ReadOutcome.UNKNOWN, detail=f"metadata: {meta.error}")
        if partition not in meta.partitions:
            return ReadBack(ReadOutcome.MISSING, detail="the broker has no such partition")
        return None

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=2.0, cached=False
            )
            return int(low), int(high)
        except KafkaException:
            return None

    def close(self) -> None:
        self._consumer.close()


def produce_waiting(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    on_delivery: Any = None,
    wait_s: float = 0.05,
) -> None:
    """Produce one message. While the local queue is full (BufferError), serve delivery reports
    for up to ``wait_s`` and try again: a full queue is back-pressure, never a dropped message.
    ``on_delivery(err, msg)`` is called from a later poll/flush, as with ``produce``."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(wait_s)
