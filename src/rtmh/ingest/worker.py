"""`rtmh worker`: the poll loop. Kafka -> decode -> batch -> checkpoint -> after-commit hooks.

Offsets live in PostgreSQL and are written in the same transaction as the rows they produced, so a
killed worker loses and duplicates nothing: its successor starts where the last commit ended.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from rtmh.config import Settings
from rtmh.db.connect import connect, describe_url
from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch, Partition
from rtmh.ingest.decode import decode, kind_for_topic
from rtmh.ingest.offsets import Probe, StartDecision, decide_start, needs_probe
from rtmh.ingest.store import (
    Fenced,
    StoredOffset,
    load_offsets,
    maintain_partitions,
    quarantine_invalid_json,
    write_batch_exactly_once,
)
from rtmh.kafka.client import MessageReader, ensure_topics, make_consumer, to_record
from rtmh.records import Kind

log = logging.getLogger(__name__)

#: Hooks run after a batch committed (rules evaluation); they get the committed batch.
AfterCommit = Callable[[Batch], None]
#: Writes added to the checkpoint transaction (window partials).
InTransaction = Callable[[psycopg.Connection, Batch], None]

TOPIC_CHECK_SECONDS = 5.0
MAINTENANCE_SECONDS = 3600.0


@dataclass
class Ownership:
    """Partitions this worker owns: their generation and the offsets row as last seen."""

    generation: dict[Partition, int] = field(default_factory=dict)
    expected: dict[Partition, StoredOffset | None] = field(default_factory=dict)

    def take(self, part: Partition, decision: StartDecision) -> None:
        self.generation[part] = decision.generation
        self.expected[part] = decision.expected

    def release(self, parts: set[Partition]) -> None:
        for part in parts:
            self.generation.pop(part, None)
            self.expected.pop(part, None)


class Worker:
    def __init__(
        self,
        settings: Settings,
        postgres_url: str,
        bootstrap: str,
        *,
        in_transaction: InTransaction | None = None,
        after_commit: list[AfterCommit] | None = None,
    ):
        self.settings = settings
        self.url = postgres_url
        self.bootstrap = bootstrap
        self.topics = [settings.topic(k.value) for k in Kind]
        self.in_transaction = in_transaction
        self.after_commit = after_commit or []
        #: run when the loop ends, e.g. to stop the rules engine's thread
        self.on_stop: list[Callable[[], None]] = []
        self.owned = Ownership()
        self.batch = Batch()
        self.batch_started = 0.0
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        self._reader: MessageReader | None = None
        self._stop = threading.Event()
        self.committed_batches = 0

    # --- PostgreSQL ------------------------------------------------------------------------
    def _db(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.url, autocommit=True)
        return self._conn

    def _with_db_retry(self, what: str, action: Callable[[psycopg.Connection], object]) -> bool:
        """Run ``action`` until it succeeds; False when stopping while PostgreSQL is down."""
        delay = 0.2
        while True:
            try:
                action(self._db())
                return True
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as err:
                metrics.DB_RETRIES.inc()
                self._conn = None
                if self._stop.is_set():
                    log.error("stopping with PostgreSQL unreachable; %s not done (%s)", what, err)
                    return False
                log.warning(
                    "PostgreSQL at %s unavailable during %s (%s); retrying in %.1f s",
                    describe_url(self.url),
                    what,
                    " ".join(str(err).split())[:200],
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
            except Exception as err:  # DatabaseUnavailable from connect()
                if "cannot connect" not in str(err):
                    raise
                metrics.DB_RETRIES.inc()
                if self._stop.is_set():
                    return False
                log.warning("%s; retrying in %.1f s", err, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # --- assignment --------------------------------------------------------------------------
    def _probe(self, part: Partition, stored: StoredOffset) -> Probe:
        assert self._reader is not None
        marks = self._reader.watermarks(*part)
        msg = self._reader.read(part[0], part[1], stored.next_offset - 1)
        if msg is None:
            return Probe(marks, None)
        from rtmh.ingest.batch import message_digest

        return Probe(marks, message_digest(to_record(msg)))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored: dict[Partition, StoredOffset] = {}

        def load(conn: psycopg.Connection) -> None:
            stored.update(load_offsets(conn, self.settings.group_id, self.topics))

        self._with_db_retry("loading offsets", load)
        for tp in partitions:
            part = (tp.topic, tp.partition)
            row = stored.get(part)
            probe = self._probe(part, row) if row is not None and needs_probe(row) else None
            decision = decide_start(f"{part[0]}[{part[1]}]", row, probe)
            if decision.warning:
                log.warning(decision.warning)
                if decision.generation != (row.generation if row else 0):
                    metrics.LOG_RESETS.inc()
            self.owned.take(part, decision)
            tp.offset = OFFSET_BEGINNING if decision.offset is None else decision.offset
        consumer.assign(partitions)
        log.info(
            "assigned %s",
            ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions) or "nothing",
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # commit what we hold while the partitions are still ours, so the next owner starts after it
        self.checkpoint()
        self.owned.release({(tp.topic, tp.partition) for tp in partitions})
        consumer.unassign()
        log.info("revoked %d partition(s)", len(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.batch.drop_partitions(lost)
        self.owned.release(lost)
        consumer.unassign()
        log.warning(
            "lost %d partition(s); their uncommitted messages are left to the next owner",
            len(partitions),
        )

    # --- the checkpoint ------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Commit the batch: rows, dead letters, partials and offsets in one transaction."""
        batch = self.batch
        if not batch:
            return
        started = time.perf_counter()
        expected = {p: self.owned.expected.get(p) for p in batch.progress}
        fenced: list[Fenced] = []

        def write(conn: psycopg.Connection) -> None:
            try:
                write_batch_exactly_once(
                    conn, self.settings.group_id, batch, expected, self.in_transaction
                )
            except Fenced as err:
                fenced.append(err)
            except psycopg.errors.DataError as err:
                if not quarantine_invalid_json(conn, batch):
                    raise
                log.warning("dead-lettered rows PostgreSQL refused (%s); retrying the batch", err)
                write(conn)

        if not self._with_db_retry("checkpoint", write):
            return
        self.batch = Batch()
        if fenced:
            metrics.FENCED.inc()
            log.warning("batch of %d dropped, offsets moved under us: %s", len(batch), fenced[0])
            self._reseek(set(batch.progress))
            return
        for part, prog in batch.progress.items():
            if part in self.owned.expected:
                self.owned.expected[part] = StoredOffset(
                    prog.generation, prog.next_offset, prog.last_digest
                )
        self._count(batch, time.perf_counter() - started)
        for hook in self.after_commit:
            hook(batch)

    def _count(self, batch: Batch, seconds: float) -> None:
        self.committed_batches += 1
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_SECONDS.observe(seconds)
        for msg, _ in batch.records:
            metrics.WRITTEN.labels(msg.topic).inc()
        for msg, _ in batch.rejected:
            metrics.DEAD_LETTERED.labels(msg.topic).inc()

    def _reseek(self, parts: set[Partition]) -> None:
        """After a fenced batch: go back to what PostgreSQL says for partitions still ours."""
        assert self._consumer is not None
        stored: dict[Partition, StoredOffset] = {}
        self._with_db_retry(
            "reloading offsets",
            lambda conn: stored.update(load_offsets(conn, self.settings.group_id, self.topics)),
        )
        for part in parts & set(self.owned.generation):
            row = stored.get(part)
            self.owned.expected[part] = row
            offset = row.next_offset if row is not None else OFFSET_BEGINNING
            if row is not None:
                self.owned.generation[part] = row.generation
            try:
                self._consumer.seek(TopicPartition(part[0], part[1], offset))
            except Exception as err:  # the partition went away meanwhile
                log.info("not seeking %s[%d]: %s", part[0], part[1], err)

    # --- the loop ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _kind(self, topic: str) -> Kind | None:
        return kind_for_topic(topic, self.settings.topic_prefix)

    def _take(self, raw: list[Message]) -> None:
        for m in raw:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.debug("consumer: %s", err)
                continue
            rec = to_record(m)
            part = (rec.topic, rec.partition)
            generation = self.owned.generation.get(part)
            kind = self._kind(part[0])
            if generation is None or kind is None:
                continue
            metrics.CONSUMED.labels(rec.topic).inc()
            if not self.batch:
                self.batch_started = time.monotonic()
            self.batch.add(
                rec, decode(rec, kind, max_bytes=self.settings.max_message_bytes), generation
            )

    def _maintain(self) -> None:
        def run(conn: psycopg.Connection) -> None:
            for line in maintain_partitions(conn, 2, self.settings.retention_days):
                log.info("raw_events partitions: %s", line)

        self._with_db_retry("partition maintenance", run)

    def run(self) -> None:
        s = self.settings
        ensure_topics(self.bootstrap, self.topics, s.partitions)
        self._maintain()
        self._reader = MessageReader(self.bootstrap)
        consumer = make_consumer(
            self.bootstrap, s.group_id, session_timeout_ms=s.session_timeout_ms
        )
        self._consumer = consumer
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("worker consuming %s as group %s", ", ".join(self.topics), s.group_id)
        max_wait = s.batch_max_ms / 1000
        next_topic_check = time.monotonic() + TOPIC_CHECK_SECONDS
        next_maintenance = time.monotonic() + MAINTENANCE_SECONDS
        try:
            while not self._stop.is_set():
                room = s.batch_max_messages - len(self.batch)
                wait = (
                    max_wait
                    if not self.batch
                    else max(0.0, self.batch_started + max_wait - time.monotonic())
                )
                self._take(consumer.consume(num_messages=min(room, 10_000), timeout=min(wait, 0.5)))
                now = time.monotonic()
                if self.batch and (
                    len(self.batch) >= s.batch_max_messages or now >= self.batch_started + max_wait
                ):
                    self.checkpoint()
                if now >= next_topic_check:
                    # the embedded broker forgets its topics on restart; recreate them
                    next_topic_check = now + TOPIC_CHECK_SECONDS
                    try:
                        ensure_topics(self.bootstrap, self.topics, s.partitions, timeout=2)
                    except Exception as err:
                        log.warning("broker unreachable while checking topics: %s", err)
                if now >= next_maintenance:
                    next_maintenance = now + MAINTENANCE_SECONDS
                    self._maintain()
            self.checkpoint()
        finally:
            for hook in self.on_stop:
                hook()
            consumer.close()  # leaves the group at once, so partitions move without waiting
            self._reader.close()
            if self._conn is not None:
                self._conn.close()
            log.info("worker stopped after %d committed batches", self.committed_batches)
