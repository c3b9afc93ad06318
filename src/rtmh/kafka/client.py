"""confluent-kafka configuration and helpers; the rest of RTMH never sees a librdkafka dict.

Settings chosen from what was measured against the embedded broker (DESIGN.md): a 6 s session
timeout makes a group join take ~3 s instead of ~23 s, and a 1 s heartbeat lets a surviving
worker take over a killed worker's partitions within ~8 s.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
import uuid
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # admin/__init__ does not re-export it
from confluent_kafka.cimpl import NewTopic

from rtmh.records import KafkaMessage, ReadBack, ReadOutcome

log = logging.getLogger(__name__)


#: the broker does not hold a fetch position (with auto.offset.reset=error librdkafka reports it
#: as _AUTO_OFFSET_RESET instead of moving the position by itself)
OUT_OF_RANGE = (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE)


def _common(bootstrap: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        # which of RTMH's clients a request came from, in a broker's logs (and the gate's)
        "client.id": client_id,
        "socket.keepalive.enable": True,
        # the first reconnect after a lost connection: the embedded broker's log roll closes
        # every connection on purpose, and each client's wait here is part of the pause a roll
        # makes (doubling up to the max below when the broker is really gone)
        "reconnect.backoff.ms": 10,
        "reconnect.backoff.max.ms": 2000,
        "logger": logging.getLogger("librdkafka"),
    }


def consumer_config(
    bootstrap: str, group_id: str, *, session_timeout_ms: int = 6000, **extra: Any
) -> dict[str, Any]:
    return {
        **_common(bootstrap, "rtmh-consumer"),
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
        # tansu answers a fetch only after fetch.wait.max.ms even when it has data, so this is a
        # latency floor there; its CPU goes to listing the batches it returns, not to the number
        # of fetches (10 vs 50 ms, 10,000 msg/s: the same 77-105 % of a core, measured). A real
        # Kafka answers as soon as it has data: this only sets how often an idle fetch returns.
        "fetch.wait.max.ms": 10,
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
        **_common(bootstrap, "rtmh-producer"),
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        "queue.buffering.max.messages": 1_000_000,
        "acks": "all",
        # a produce request the broker did not answer (the embedded broker's log roll closes
        # every connection) is sent again after this, not after librdkafka's 100 ms: the first
        # message acknowledged after a roll came 105 -> 16-33 ms after it (measured). Backoff
        # still doubles per retry, up to retry.backoff.max.ms, against a broker that is down.
        "retry.backoff.ms": 10,
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


def take_ready(consumer: Consumer, most: int, wait: float) -> list[Message]:
    """Up to ``most`` messages as soon as there is one; none after ``wait`` seconds.

    consume() waits out its whole timeout unless it fills up, which made every batch of light
    traffic wait RTMH_BATCH_MAX_MS; poll() returns at the first message, and consume(timeout=0)
    then takes what is already fetched."""
    first = consumer.poll(wait)
    if first is None:
        return []
    if most <= 1:
        return [first]
    return [first, *consumer.consume(num_messages=most - 1, timeout=0)]


def refresh_metadata(consumer: Consumer, topics: Iterable[str], timeout: float = 1.0) -> None:
    """Have ``consumer`` ask the broker about ``topics`` now.

    After its connection was lost, librdkafka finds its partitions' leaders again only at its
    next one-second scan, and fetches nothing meanwhile: after the embedded broker's log roll
    the first message came 0.63-0.94 s after the broker was back, 0.11 s with this (measured
    with one consumer, no PostgreSQL, four rolls). A metadata request for a topic updates its
    partitions at once. A broker that does not answer only costs ``timeout``."""
    for topic in topics:
        try:
            consumer.list_topics(topic, timeout=timeout)
        except KafkaException as err:
            log.info("no metadata for %s: %s", topic, err)
            return


def make_admin(bootstrap: str) -> AdminClient:
    """An admin client to keep: the worker checks its topics every few seconds from the poll
    loop, and a new client each time is a new connection and thread start-up on that loop."""
    return AdminClient(_common(bootstrap, "rtmh-admin"))


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
    admin = AdminClient(_common(bootstrap, "rtmh-admin"))
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


#: the low and the high watermark, as ``AdminClient.list_offsets`` asks for them
_ENDS = (OffsetSpec.earliest(), OffsetSpec.latest())  # type: ignore[no-untyped-call]

#: a partition as the reader names it (rtmh.ingest.batch.Partition, which this stage cannot import)
TopicPart = tuple[str, int]


class MessageReader:
    """Reads messages back by offset, outside any consumer group (used to verify offsets): one
    partition, or a set of them at once."""

    def __init__(self, bootstrap: str, admin: AdminClient | None = None):
        self._bootstrap = bootstrap
        self._consumer = Consumer(
            {
                **_common(bootstrap, "rtmh-read-back"),
                "group.id": f"rtmh-probe-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "error",
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 50,
            }
        )
        #: for the watermarks of a set (ListOffsets), made on first use when not given
        self._admin = admin

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack:
        """Read the message at ``offset`` back (see ``read_many``)."""
        return self.read_many({(topic, partition): offset}, timeout)[(topic, partition)]

    def read_many(
        self, wanted: Mapping[TopicPart, int], timeout: float = 2.0
    ) -> dict[TopicPart, ReadBack]:
        """Read the message at each partition's offset back, every partition at once: one
        metadata request a topic, one assignment, and one ``timeout`` for the whole set, however
        many partitions it holds (in series, 100 partitions the broker is silent on took 100
        times ``timeout``).

        Only the broker's own words make an answer MISSING (no such partition, out of range, the
        end of its log before the offset); an error or no answer within ``timeout`` is UNKNOWN,
        never taken for an absence. Every partition asked gets an answer."""
        answers: dict[TopicPart, ReadBack] = {}
        topics = sorted({topic for topic, _ in wanted})
        asked_meta = time.monotonic() + timeout
        for topic in topics:
            parts = [p for t, p in wanted if t == topic]
            answers.update(self._refresh(topic, parts, asked_meta - time.monotonic()))
        waiting = {part: offset for part, offset in wanted.items() if part not in answers}
        if waiting:
            self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in waiting.items()])
            paused: list[TopicPartition] = []
            try:
                self._fetch(waiting, answers, timeout, paused)
            finally:
                # a pause outlives the assignment: a partition paused here and assigned again by
                # a later read would never be fetched (measured, librdkafka 2.16)
                if paused:
                    self._consumer.resume(paused)
                self._consumer.unassign()
        return answers

    def _fetch(
        self,
        waiting: Mapping[TopicPart, int],
        answers: dict[TopicPart, ReadBack],
        timeout: float,
        paused: list[TopicPartition],
    ) -> None:
        """Consume the assigned partitions until each has its answer or ``timeout`` passes;
        those without one are UNKNOWN. A partition is paused (added to ``paused``) once its
        answer is in."""
        deadline = time.monotonic() + timeout
        left = len(waiting)
        silence = f"no answer within {timeout:g} s"
        while left and (remaining := deadline - time.monotonic()) > 0:
            for msg in self._consumer.consume(num_messages=1000, timeout=min(remaining, 0.1)):
                topic, partition = msg.topic(), msg.partition()
                if topic is None or partition is None:
                    err = msg.error()
                    if err is not None:
                        # the client's own error, no partition's (a connection lost): it proves
                        # nothing about any log, but it is why a partition may go unanswered
                        silence = f"no answer within {timeout:g} s ({err.str()})"
                    continue
                part = (topic, partition)
                if part not in waiting or part in answers:
                    continue
                answer = answer_for(msg, waiting[part])
                if answer is not None:
                    answers[part] = answer
                    left -= 1
                    # stop fetching what the set no longer waits on
                    paused.append(TopicPartition(topic, partition))
                    self._consumer.pause(paused[-1:])
        for part in waiting.keys() - answers.keys():
            answers[part] = ReadBack(ReadOutcome.UNKNOWN, detail=silence)

    def _refresh(
        self, topic: str, partitions: list[int], timeout: float
    ) -> dict[TopicPart, ReadBack]:
        """Fetch the topic's metadata now; the answers it already settles (no such partition:
        MISSING; no metadata: UNKNOWN), the partitions it leaves to the fetch left out.

        Never fetch with what the handle cached earlier: after a broker restart the cache still
        holds the old topic id, tansu answers a fetch for an unknown id with topic id zero and a
        CurrentLeader hint, and librdkafka (2.16) turns that hint into a metadata update that it
        looks up by a NULL topic name: SIGSEGV in its main thread (issue 24)."""

        def every(outcome: ReadOutcome, detail: str) -> dict[TopicPart, ReadBack]:
            return {(topic, p): ReadBack(outcome, detail=detail) for p in partitions}

        if timeout <= 0:
            return every(ReadOutcome.UNKNOWN, "no metadata: the set's time ran out")
        try:
            topics = self._consumer.list_topics(topic, timeout=timeout).topics
        except KafkaException as err:
            return every(ReadOutcome.UNKNOWN, f"no metadata: {err}")
        meta = topics.get(topic)
        if meta is None or (
            meta.error is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        ):
            return every(ReadOutcome.MISSING, "the broker has no such topic")
        if meta.error is not None:
            return every(ReadOutcome.UNKNOWN, f"metadata: {meta.error}")
        return {
            (topic, p): ReadBack(ReadOutcome.MISSING, detail="the broker has no such partition")
            for p in partitions
            if p not in meta.partitions
        }

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        try:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=2.0, cached=False
            )
            return int(low), int(high)
        except KafkaException:
            return None

    def watermarks_many(
        self, parts: Collection[TopicPart], timeout: float = 2.0
    ) -> dict[TopicPart, tuple[int, int] | None]:
        """Each partition's (low, high) watermarks, as ``watermarks`` gives them (the high one
        the last stable offset), for the whole set under one deadline; None for a partition the
        broker did not answer for.

        One request per topic and end, all sent before any is awaited: librdkafka fails a whole
        ListOffsets request when one of its topics is unknown, and only after its leader lookup
        gives up (1-3 s, measured), so a topic that vanished in a reset would otherwise hide
        every other topic's answer."""
        marks: dict[TopicPart, tuple[int, int] | None] = dict.fromkeys(parts)
        if not parts:
            return marks
        if self._admin is None:
            self._admin = AdminClient(_common(self._bootstrap, "rtmh-admin"))
        by_topic: dict[str, list[int]] = {}
        for topic, partition in parts:
            by_topic.setdefault(topic, []).append(partition)
        asked: list[tuple[int, TopicPart, concurrent.futures.Future[Any]]] = []
        for topic, partitions in by_topic.items():
            for end, spec in enumerate(_ENDS):
                try:
                    futures = self._admin.list_offsets(
                        {TopicPartition(topic, p): spec for p in partitions},
                        isolation_level=IsolationLevel.READ_COMMITTED,
                        request_timeout=timeout,
                    )
                except KafkaException:
                    continue
                asked += [(end, (tp.topic, tp.partition), f) for tp, f in futures.items()]
        deadline = time.monotonic() + timeout
        ends: tuple[dict[TopicPart, int], dict[TopicPart, int]] = ({}, {})
        for end, part, future in asked:
            try:
                left = max(0.0, deadline - time.monotonic())
                ends[end][part] = int(future.result(left).offset)
            except (KafkaException, concurrent.futures.TimeoutError):
                continue
        low, high = ends
        for part in parts:
            if part in low and part in high:
                marks[part] = (low[part], high[part])
        return marks

    def close(self) -> None:
        self._consumer.close()


def answer_for(msg: Message, offset: int) -> ReadBack | None:
    """What one consumed event says about the message at ``offset`` of its partition; None when
    it says nothing yet (keep waiting)."""
    err = msg.error()
    got = msg.offset()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            # on a real Kafka, the end of the log; the embedded broker's high watermark
            # under-reports, but it answers a fetch below its end with messages, not with an end
            # (measured)
            if got is not None and 0 <= got <= offset:
                return ReadBack(ReadOutcome.MISSING, detail=f"the log ends at {got}")
            return None
        if err.code() in OUT_OF_RANGE:
            return ReadBack(ReadOutcome.MISSING, detail=err.str())
        return ReadBack(ReadOutcome.UNKNOWN, detail=err.str())
    if got == offset:
        return ReadBack(ReadOutcome.FOUND, to_record(msg))
    if got is not None and got > offset:
        return ReadBack(ReadOutcome.LATER, to_record(msg))
    return None


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
