"""`rtmh worker`: the poll loop. Kafka -> decode -> batch -> checkpoint -> after-commit hooks.

Offsets live in PostgreSQL and are written in the same transaction as the rows they produced, so a
killed worker loses and duplicates nothing: its successor starts where the last commit ended.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    TopicPartition,
)

from rtmh.config import Settings
from rtmh.ingest import metrics
from rtmh.ingest.batch import Partition, hand_over_due, poll_wait
from rtmh.ingest.checkpoint import (
    AfterCommit,
    Checkpointer,
    Ownership,
    Timings,
    TouchedBy,
)
from rtmh.ingest.database import Database
from rtmh.ingest.decode import decode_message
from rtmh.ingest.deltas import CumulativeDeltas
from rtmh.ingest.offsets import (
    recreated_topics,
)
from rtmh.ingest.safety_net import InTransaction
from rtmh.ingest.starts import Starts
from rtmh.ingest.store import StoredOffset, load_offsets, maintain_partitions
from rtmh.ingest.tuning import GC_SECONDS, TUNING
from rtmh.kafka.client import (
    OUT_OF_RANGE,
    MessageReader,
    ensure_topics,
    make_admin,
    make_consumer,
    refresh_metadata,
    take_ready,
    to_record,
)
from rtmh.records import Kind

log = logging.getLogger(__name__)

TOPIC_CHECK_SECONDS = 5.0
#: how often to try re-checking the partitions after every broker was gone, until it works
RECHECK_RETRY_SECONDS = 0.25
MAINTENANCE_SECONDS = 3600.0


def _positions(parts: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in parts) or "nothing"


class _Schedule:
    """When each of the poll loop's timed chores is next due (monotonic seconds)."""

    def __init__(self, now: float) -> None:
        self.topic_check = now + TOPIC_CHECK_SECONDS
        self.maintenance = now + MAINTENANCE_SECONDS
        self.gc = now + GC_SECONDS
        self.recheck = 0.0


class Worker:
    def __init__(
        self,
        settings: Settings,
        postgres_url: str,
        bootstrap: str,
        *,
        in_transaction: InTransaction | None = None,
        after_commit: list[AfterCommit] | None = None,
        touched_by: TouchedBy | None = None,
        reader: MessageReader | None = None,
        timings: Timings | None = None,
    ):
        self.settings = settings
        self.bootstrap = bootstrap
        #: topic -> the kind it carries: the RTMH topics, or the user's lists per kind
        self.topic_kinds = {t: Kind(k) for t, k in settings.topic_kinds().items()}
        self.topics = list(self.topic_kinds)
        #: cumulative OTLP series -> their last point, to window increments (ingest.deltas)
        self.deltas = CumulativeDeltas()
        #: run when the loop ends, e.g. to stop the rules engine's thread
        self.on_stop: list[Callable[[], None]] = []
        self.owned = Ownership()
        self.batch_started = 0.0
        #: when the last fetch returned: a batch's age counts from its first message's arrival
        self._taken_at = 0.0
        self._stop = threading.Event()
        self.db = Database(postgres_url, self._stop)
        self.checkpoints = Checkpointer(
            settings.group_id,
            self.db,
            self.owned,
            in_transaction=in_transaction,
            touched_by=touched_by,
            after_commit=after_commit if after_commit is not None else [],
            timings=timings,
        )
        self.timings = timings
        self._consumer: Consumer | None = None
        self._admin = make_admin(bootstrap)
        self.starts = Starts(
            bootstrap, self.topics, settings.partitions, self._admin, self._stop, reader
        )
        #: topics this worker had to create when it started: any stored offset of theirs
        #: belongs to a log that is gone (taken by the first decision on each)
        self._created_at_start: set[str] = set()
        #: every broker went away since the partitions' starts were decided: the one that comes
        #: back may hold new logs (the embedded broker forgets everything), so nothing is taken
        #: until ``_recheck`` has decided each start again
        self._unchecked = False
        #: owned partitions whose fetch position the broker called out of range: their starts
        #: are decided again before anything more is taken
        self._out_of_range: set[Partition] = set()
        #: records per message in the batch lately (1.0 for JSON), to size consume() calls
        self._records_per_message = 1.0

    @property
    def after_commit(self) -> list[AfterCommit]:
        """Run on the checkpoint thread after each commit, in commit order."""
        return self.checkpoints.after_commit

    @property
    def committed_batches(self) -> int:
        return self.checkpoints.committed_batches

    # --- assignment --------------------------------------------------------------------------
    def _decide(
        self, parts: list[Partition], ids: dict[str, str] | None, recreated: dict[str, str]
    ) -> list[TopicPartition]:
        """Decide where each of ``parts`` starts and take it over; returns them positioned.

        ``ids``: the topic ids these decisions are made on (None: unknown); ``recreated``: topics
        known to be new ones, with the reason (their partitions start again whatever the log
        says)."""
        stored = self._stored_offsets()
        created = "the topic was missing when this worker started, and it created it"
        reasons = {**dict.fromkeys(self._created_at_start, created), **recreated}
        # the whole set at once: asked one by one, each silent read-back held the rest back
        started = self.starts.start_all(parts, stored, ids, reasons)
        positioned: list[TopicPartition] = []
        for part in parts:
            if part not in started:
                continue  # stopping
            row = stored.get(part)
            decision, topic_id = started[part]
            if decision.warning:
                log.warning(decision.warning)
                if decision.generation != (row.generation if row else 0):
                    metrics.LOG_RESETS.inc()
            self.owned.take(part, decision, topic_id)
            # read again from the stored offset: the remembered points may be ahead of it
            self.deltas.forget([part])
            offset = OFFSET_BEGINNING if decision.offset is None else decision.offset
            positioned.append(TopicPartition(part[0], part[1], offset))
        self._created_at_start -= {part[0] for part in parts}
        return positioned

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._join()
        ids = self.starts.current_ids()
        positioned = self._decide([(tp.topic, tp.partition) for tp in partitions], ids, {})
        consumer.assign(positioned)
        log.info("assigned %s", _positions(positioned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # commit what we hold while the partitions are still ours, so the next owner starts after it
        self.checkpoint()
        self.owned.release({(tp.topic, tp.partition) for tp in partitions})
        consumer.unassign()
        log.info("revoked %d partition(s)", len(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._join()
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.checkpoints.batch.drop_partitions(lost)
        self.deltas.forget(lost)
        self.owned.release(lost)
        consumer.unassign()
        log.warning(
            "lost %d partition(s); their uncommitted messages are left to the next owner",
            len(partitions),
        )

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's errors not tied to a message (called from within consume())."""
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self._unchecked:
                log.warning(
                    "no broker reachable (%s): nothing is consumed until each partition's start "
                    "has been checked again against the broker that comes back",
                    err.str(),
                )
            self._unchecked = True
            self.starts.broker_lost()
        elif err.fatal():
            log.error("consumer: %s", err.str())
        else:
            log.debug("consumer: %s", err.str())

    def _recreated(self, ids: dict[str, str], created: list[str]) -> dict[str, str]:
        decided_on = {part[0]: then for part, then in self.owned.topic_id.items()}
        return recreated_topics(decided_on, ids, created)

    def _recheck(
        self,
        consumer: Consumer,
        ids: dict[str, str] | None,
        recreated: dict[str, str],
        *,
        trust_batch: bool,
    ) -> None:
        """Decide every owned partition's start again, as on assignment, and move it there.

        ``trust_batch``: everything in the batch was read from the logs the starts were decided
        on (it was read before every broker went away), so it is committed first. Otherwise what
        was read from a re-created topic may come from either of its logs and is dropped: the
        decision rereads whatever of it the new log holds."""
        self._join()
        if not trust_batch:
            batch = self.checkpoints.batch
            batch.drop_partitions({p for p in batch.progress if p[0] in recreated})
        self.checkpoint()
        parts = sorted(self.owned.generation)
        if parts:
            positioned = self._decide(parts, ids, recreated)
            consumer.assign(positioned)
            # else nothing is fetched until librdkafka's next 1-s scan (issue 15)
            refresh_metadata(consumer, sorted({p[0] for p in parts}))
            log.info("re-checked %s", _positions(positioned))
        self._unchecked = False

    def _redecide_out_of_range(self, consumer: Consumer) -> None:
        """The broker said an owned partition's position is beyond its log (or before it): an
        unclean leader election, retention, a topic created again. Decide every owned start
        again, the way an assignment does, instead of librdkafka's jump to the log start."""
        parts = self._out_of_range & set(self.owned.generation)
        self._out_of_range.clear()
        if not parts:
            return
        metrics.OUT_OF_RANGE.inc(len(parts))
        log.warning(
            "fetch position out of range on %s: deciding where to start again",
            ", ".join(f"{t}[{p}]" for t, p in sorted(parts)),
        )
        ids = self.starts.current_ids()
        self._recheck(consumer, ids, self._recreated(ids, []) if ids else {}, trust_batch=True)

    def _check_topics(self, consumer: Consumer) -> None:
        """Create missing topics (the embedded broker forgets them on restart), and start the
        partitions of a topic that is a new one since their start was decided again."""
        found = self.starts.ensure_topics(self.topics)
        if found is None:
            return
        created, ids = found
        recreated = self._recreated(ids, created)
        if recreated:
            self._recheck(consumer, ids, recreated, trust_batch=self._unchecked)
            return
        for part, then in self.owned.topic_id.items():
            if then is None:
                # missing when decided, so started at its earliest offset, which holds for the
                # topic that appeared since (or its id was unknown): a change from now on is one
                self.owned.topic_id[part] = ids.get(part[0])

    # --- the checkpoint (ingest/checkpoint.py) -----------------------------------------------
    def checkpoint(self) -> None:
        """Commit the batch and wait until it is settled: committed (after-commit hooks run),
        fenced (its partitions read again), or given up because the worker is stopping while
        PostgreSQL is unreachable."""
        self._reseek(self.checkpoints.checkpoint())

    def _join(self) -> None:
        """Settle the batch in flight; a fenced one's partitions are read again."""
        self._reseek(self.checkpoints.join())

    def _submit(self) -> set[Partition]:
        """Hand the batch to the writer; returns the partitions read again (the one in flight
        was fenced)."""
        return self._reseek(self.checkpoints.submit())

    def _stored_offsets(self) -> dict[Partition, StoredOffset]:
        """What PostgreSQL holds for this group's partitions (empty when the worker stops while
        PostgreSQL is unreachable)."""
        stored: dict[Partition, StoredOffset] = {}
        self.db.run(
            "loading offsets",
            lambda conn: stored.update(load_offsets(conn, self.settings.group_id, self.topics)),
        )
        return stored

    def _reseek(self, parts: set[Partition]) -> set[Partition]:
        """After a fenced batch: go back to what PostgreSQL says for partitions still ours;
        returns ``parts``."""
        if not parts:
            return parts
        assert self._consumer is not None
        stored = self._stored_offsets()
        self.deltas.forget(parts)
        for part in parts & set(self.owned.generation):
            row = stored.get(part)
            self.owned.expected[part] = row
            offset = row.next_offset if row is not None else OFFSET_BEGINNING
            if row is not None:
                self.owned.generation[part] = row.generation
                if row.topic_id is not None:
                    # the row may name a newer log (a roll of the embedded broker's topics):
                    # reading from it is reading that log
                    self.owned.topic_id[part] = row.topic_id
            try:
                self._consumer.seek(TopicPartition(part[0], part[1], offset))
            except Exception as err:  # the partition went away meanwhile
                log.info("not seeking %s[%d]: %s", part[0], part[1], err)
        return parts

    # --- the loop ------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    def _take(self, raw: list[Message]) -> None:
        # locals and one counter update per topic and call: labels().inc() per message cost
        # ~2 µs of the ~12 µs a message took (measured)
        if raw and self.timings is not None:
            # before the decoding: a bench's clock starts when the first message is in hand
            self.timings.took(len(raw))
        batch = self.checkpoints.batch
        generations = self.owned.generation
        kinds = self.topic_kinds
        deltas = self.deltas
        max_bytes = self.settings.max_message_bytes
        limit = self.settings.batch_max_messages
        consumed: dict[str, int] = {}
        #: partitions read again from their stored offsets after a fenced batch, mid-call: the
        #: rest of ``raw`` from them will be read again, so it is not taken now
        reread: set[Partition] = set()
        for m in raw:
            err = m.error()
            if err is not None:
                if err.code() in OUT_OF_RANGE:
                    self._out_of_range.add((m.topic() or "", m.partition() or 0))
                    log.warning("consumer: %s", err.str())
                elif err.code() != KafkaError._PARTITION_EOF:
                    log.debug("consumer: %s", err)
                continue
            rec = to_record(m)
            topic = rec.topic
            generation = generations.get((topic, rec.partition))
            kind = kinds.get(topic)
            if generation is None or kind is None:
                continue
            if reread and (topic, rec.partition) in reread:
                continue
            consumed[topic] = consumed.get(topic, 0) + 1
            if not batch:
                self.batch_started = self._taken_at
            result = decode_message(rec, kind, max_bytes=max_bytes)
            if type(result) is not list:
                batch.add(rec, result, generation)
                continue
            if kind is Kind.METRICS:
                # an OTLP cumulative series windows its increments (only OTLP yields lists)
                result = deltas.convert_message((topic, rec.partition), result)
            batch.add(rec, result, generation)
            if len(batch) >= limit:
                # one consume() of OTLP exports can hold far more records than a batch may
                # (a 20,000-message batch of them held 200,000 rows and 300 MB, measured by
                # bench ingest): hand the batch over here, not after the whole call
                reread |= self._submit()
                batch = self.checkpoints.batch
        for topic, count in consumed.items():
            metrics.CONSUMED.labels(topic).inc(count)

    def _maintain(self) -> None:
        self._join()

        def run(conn: psycopg.Connection) -> None:
            for line in maintain_partitions(conn, 2, self.settings.retention_days):
                log.info("raw_events partitions: %s", line)

        self.db.run("partition maintenance", run)

    def _poll_once(self, consumer: Consumer) -> None:
        """Wait for what the broker has (returning at the first message), take it, settle the
        batch in flight when it is done, and hand the batch over when it is due: at once when
        the writer is free, or when full or old enough (group commit, ``batch.hand_over_due``)."""
        s = self.settings
        max_age = s.batch_max_ms / 1000
        batch = self.checkpoints.batch
        # the bound counts records: an OTLP message holds tens, so ask for as many messages as
        # the last batches' records per message leave room for (one 20,000-message batch of
        # Collector exports held 200,000 rows and 300 MB, measured by bench ingest)
        if batch.messages:
            self._records_per_message = batch.size / batch.messages
        room = max(1, int((s.batch_max_messages - len(batch)) / self._records_per_message))
        age = time.monotonic() - self.batch_started if batch else 0.0
        wait = poll_wait(len(batch), age, not self.checkpoints.settled(), max_age_s=max_age)
        raw = take_ready(consumer, min(room, 10_000), wait)
        self._taken_at = time.monotonic()
        if not self._unchecked:
            self._take(raw)
        # else: read around the moment every broker went away, so maybe from a log that replaced
        # the one the starts were decided on; _recheck moves every partition to a start decided
        # again, so nothing dropped here is skipped
        if self._out_of_range:
            self._redecide_out_of_range(consumer)
        if self.checkpoints.settled():
            self._join()
        batch = self.checkpoints.batch
        age = time.monotonic() - self.batch_started
        if hand_over_due(
            len(batch),
            age,
            not self.checkpoints.settled(),
            max_records=s.batch_max_messages,
            max_age_s=max_age,
        ):
            self._submit()

    def _periodic(self, consumer: Consumer, clock: _Schedule, now: float) -> None:
        """The loop's timed chores: re-checks after an outage, topic checks and lag, partition
        maintenance, garbage collection."""
        if self._unchecked and now >= clock.recheck:
            clock.recheck = now + RECHECK_RETRY_SECONDS
            ids = self.starts.current_ids()  # None: no broker back yet
            if ids is not None:
                self._recheck(consumer, ids, self._recreated(ids, []), trust_batch=True)
        if now >= clock.topic_check:
            clock.topic_check = now + TOPIC_CHECK_SECONDS
            self._check_topics(consumer)
            metrics.report_lag(consumer, self.owned.next_offsets())
        if now >= clock.maintenance:
            clock.maintenance = now + MAINTENANCE_SECONDS
            self._maintain()
        if now >= clock.gc:
            clock.gc = now + GC_SECONDS
            gc.collect()

    def run(self) -> None:
        s = self.settings
        created = ensure_topics(self.bootstrap, self.topics, s.partitions, admin=self._admin)
        self._created_at_start = set(created)
        self._maintain()
        self.starts.open()
        consumer = make_consumer(
            self.bootstrap,
            s.group_id,
            session_timeout_ms=s.session_timeout_ms,
            error_cb=self._on_error,
        )
        self._consumer = consumer
        consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        log.info("worker consuming %s as group %s", ", ".join(self.topics), s.group_id)
        TUNING.acquire()
        clock = _Schedule(time.monotonic())
        try:
            while not self._stop.is_set():
                self._poll_once(consumer)
                self._periodic(consumer, clock, time.monotonic())
            self.checkpoint()
        finally:
            self._stop.set()  # a checkpoint still retrying (we are here on an error) gives up
            self.checkpoints.shutdown()
            TUNING.release()
            for hook in self.on_stop:
                hook()
            consumer.close()  # leaves the group at once, so partitions move without waiting
            self.starts.close()
            self.db.close()
            log.info("worker stopped after %d committed batches", self.committed_batches)
