"""`rtmh worker`: the poll loop. Kafka -> decode -> batch -> checkpoint -> after-commit hooks.

Offsets live in PostgreSQL and are written in the same transaction as the rows they produced, so a
killed worker loses and duplicates nothing: its successor starts where the last commit ended.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from rtmh.config import Settings
from rtmh.db.connect import DatabaseUnavailable, connect, describe_url
from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch, Partition, message_digest
from rtmh.ingest.decode import decode, kind_for_topic
from rtmh.ingest.offsets import (
    AskAgain,
    Probe,
    StartDecision,
    decide_start,
    needs_probe,
    recreated_topics,
)
from rtmh.ingest.store import (
    AlreadyCommitted,
    Fenced,
    InTransaction,
    StoredOffset,
    load_offsets,
    maintain_partitions,
    write_batch_exactly_once,
)
from rtmh.kafka.client import (
    OUT_OF_RANGE,
    MessageReader,
    ensure_topics,
    make_admin,
    make_consumer,
    to_record,
    topic_ids,
)
from rtmh.records import DecodedRecord, Kind, ReadOutcome, WindowKey

log = logging.getLogger(__name__)

#: Hooks run after a batch committed (rules evaluation); they get the committed batch.
AfterCommit = Callable[[Batch], None]
#: the windows records touch, without writing anything: for a batch found committed after its
#: COMMIT reply was lost, whose in-transaction writes did not report them
TouchedBy = Callable[[Sequence[DecodedRecord]], set[WindowKey]]

TOPIC_CHECK_SECONDS = 5.0
#: how often to try re-checking the partitions after every broker was gone, until it works
RECHECK_RETRY_SECONDS = 1.0
#: longest wait between read-backs of a stored offset the broker did not answer
PROBE_RETRY_MAX_SECONDS = 5.0
MAINTENANCE_SECONDS = 3600.0
GC_SECONDS = 10.0
#: GIL switch interval while a worker runs (Python's default is 5 ms)
SWITCH_INTERVAL_S = 0.001


class _RuntimeTuning:
    """Interpreter settings for as long as at least one worker runs in this process.

    - The cyclic GC: startup objects frozen, automatic collections off, a full collection every
      GC_SECONDS from the loop instead. Each batch holds ~100k tracked objects; automatic
      collections rescanned them (and ~60k startup objects) every few thousand messages. The
      ingest path makes no reference cycles (a batch is freed by reference counting once its
      checkpoint settles), so what waits for the timed collection is the odd traceback.
    - The GIL switch interval, 5 ms -> 1 ms: the checkpoint thread gets the GIL back sooner to
      format the next COPY chunk, so PostgreSQL is not left without rows while the poll loop
      decodes (alone: 143k -> 149k events/s).

    Both together, ingest benchmark (200k events): worker CPU 7.9 -> 5.9 µs an event,
    113k -> 149k events/s (measured, ingest-only worker).

    Counted, so workers running side by side in one process (tests) restore the settings once,
    when the last one stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._gc_was_enabled = True
        self._switch_interval = 0.005

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._gc_was_enabled = gc.isenabled()
            self._switch_interval = sys.getswitchinterval()
            gc.collect()
            gc.freeze()
            gc.disable()
            sys.setswitchinterval(SWITCH_INTERVAL_S)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            sys.setswitchinterval(self._switch_interval)
            gc.unfreeze()
            if self._gc_was_enabled:
                gc.enable()


_TUNING = _RuntimeTuning()


def _positions(parts: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in parts) or "nothing"


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How a checkpoint ended; neither committed nor fenced = given up (stopping, DB down)."""

    committed: bool
    fenced: Fenced | None = None
    seconds: float = 0.0


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
        touched_by: TouchedBy | None = None,
        reader: MessageReader | None = None,
    ):
        self.settings = settings
        self.url = postgres_url
        self.bootstrap = bootstrap
        self.topics = [settings.topic(k.value) for k in Kind]
        self.in_transaction = in_transaction
        self.after_commit = after_commit or []
        self.touched_by = touched_by
        #: run when the loop ends, e.g. to stop the rules engine's thread
        self.on_stop: list[Callable[[], None]] = []
        self.owned = Ownership()
        self.batch = Batch()
        self.batch_started = 0.0
        self._poll_began = 0.0
        self._conn: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        #: reads stored offsets back (given: a test's reader that fails on purpose)
        self._reader: MessageReader | None = reader
        self._admin = make_admin(bootstrap)
        #: topics this worker had to create when it started: any stored offset of theirs
        #: belongs to a log that is gone (taken by the first decision on each)
        self._created_at_start: set[str] = set()
        #: topic id each owned partition's start was decided on (None: missing or unknown)
        self._decided_on: dict[Partition, str | None] = {}
        #: every broker went away since the partitions' starts were decided: the one that comes
        #: back may hold new logs (the embedded broker forgets everything), so nothing is taken
        #: until ``_recheck`` has decided each start again
        self._unchecked = False
        #: owned partitions whose fetch position the broker called out of range: their starts
        #: are decided again before anything more is taken
        self._out_of_range: set[Partition] = set()
        self._stop = threading.Event()
        self._kinds: dict[str, Kind | None] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtmh-checkpoint")
        self._inflight: tuple[Batch, Future[_Outcome]] | None = None
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
            except (
                psycopg.OperationalError,
                psycopg.InterfaceError,
                OSError,
                DatabaseUnavailable,
            ) as err:
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

    # --- assignment --------------------------------------------------------------------------
    def _probe(self, part: Partition, stored: StoredOffset) -> Probe:
        assert self._reader is not None
        back = self._reader.read(part[0], part[1], stored.next_offset - 1)
        if back.outcome is ReadOutcome.FOUND and back.message is not None:
            return Probe(None, back.outcome, message_digest(back.message), back.detail)
        # only an absence needs the watermarks (retention or a shorter log)
        marks = self._reader.watermarks(*part) if back.outcome is ReadOutcome.MISSING else None
        return Probe(marks, back.outcome, None, back.detail)

    def _start(
        self, part: Partition, row: StoredOffset | None, topic_id: str | None, reason: str | None
    ) -> StartDecision | None:
        """Where ``part`` starts, read-backs the broker does not answer asked again (never taken
        for a reset); None when the worker stops before it knows."""
        delay = 0.5
        asked = 0
        while True:
            probe = None
            if reason is None and row is not None and needs_probe(row, topic_id):
                probe = self._probe(part, row)
            decision = decide_start(f"{part[0]}[{part[1]}]", row, probe, reason, topic_id)
            if not isinstance(decision, AskAgain):
                return decision
            asked += 1
            metrics.PROBE_RETRIES.inc()
            if asked == 1 or asked % 10 == 0:
                log.warning(
                    "%s; asking again in %.1f s (attempt %d). Nothing is consumed from this "
                    "partition until the broker answers.",
                    decision.reason,
                    delay,
                    asked,
                )
            if self._stop.wait(delay):
                return None
            delay = min(delay * 2, PROBE_RETRY_MAX_SECONDS)

    def _current_ids(self) -> dict[str, str] | None:
        """The topics' ids now; None when the broker cannot be asked."""
        try:
            return topic_ids(self.bootstrap, self.topics, timeout=2, admin=self._admin)
        except (KafkaException, TimeoutError) as err:
            log.info("could not ask the broker for topic ids: %s", err)
            return None

    def _decide(
        self, parts: list[Partition], ids: dict[str, str] | None, recreated: dict[str, str]
    ) -> list[TopicPartition]:
        """Decide where each of ``parts`` starts and take it over; returns them positioned.

        ``ids``: the topic ids these decisions are made on (None: unknown); ``recreated``: topics
        known to be new ones, with the reason (their partitions start again whatever the log
        says)."""
        stored: dict[Partition, StoredOffset] = {}

        def load(conn: psycopg.Connection) -> None:
            stored.update(load_offsets(conn, self.settings.group_id, self.topics))

        self._with_db_retry("loading offsets", load)
        positioned: list[TopicPartition] = []
        for part in parts:
            row = stored.get(part)
            reason = recreated.get(part[0])
            if reason is None and part[0] in self._created_at_start:
                reason = "the topic was missing when this worker started, and it created it"
            topic_id = None if ids is None else ids.get(part[0])
            decision = self._start(part, row, topic_id, reason)
            if decision is None:
                continue  # stopping
            if decision.warning:
                log.warning(decision.warning)
                if decision.generation != (row.generation if row else 0):
                    metrics.LOG_RESETS.inc()
            self.owned.take(part, decision)
            self._decided_on[part] = topic_id
            offset = OFFSET_BEGINNING if decision.offset is None else decision.offset
            positioned.append(TopicPartition(part[0], part[1], offset))
        self._created_at_start -= {part[0] for part in parts}
        return positioned

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._join()
        ids = self._current_ids()
        positioned = self._decide([(tp.topic, tp.partition) for tp in partitions], ids, {})
        consumer.assign(positioned)
        log.info("assigned %s", _positions(positioned))

    def _release(self, parts: set[Partition]) -> None:
        self.owned.release(parts)
        for part in parts:
            self._decided_on.pop(part, None)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # commit what we hold while the partitions are still ours, so the next owner starts after it
        self.checkpoint()
        self._release({(tp.topic, tp.partition) for tp in partitions})
        consumer.unassign()
        log.info("revoked %d partition(s)", len(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._join()
        lost = {(tp.topic, tp.partition) for tp in partitions}
        self.batch.drop_partitions(lost)
        self._release(lost)
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
        elif err.fatal():
            log.error("consumer: %s", err.str())
        else:
            log.debug("consumer: %s", err.str())

    def _recreated(self, ids: dict[str, str], created: list[str]) -> dict[str, str]:
        decided_on = {part[0]: then for part, then in self._decided_on.items()}
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
            self.batch.drop_partitions({p for p in self.batch.progress if p[0] in recreated})
        self.checkpoint()
        parts = sorted(self.owned.generation)
        if parts:
            positioned = self._decide(parts, ids, recreated)
            consumer.assign(positioned)
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
        ids = self._current_ids()
        self._recheck(consumer, ids, self._recreated(ids, []) if ids else {}, trust_batch=True)

    def _check_topics(self, consumer: Consumer) -> None:
        """Create missing topics (the embedded broker forgets them on restart), and start the
        partitions of a topic that is a new one since their start was decided again."""
        try:
            created = ensure_topics(
                self.bootstrap, self.topics, self.settings.partitions, timeout=2, admin=self._admin
            )
            ids = topic_ids(self.bootstrap, self.topics, timeout=2, admin=self._admin)
        except Exception as err:
            log.warning("broker unreachable while checking topics: %s", err)
            return
        recreated = self._recreated(ids, created)
        if recreated:
            self._recheck(consumer, ids, recreated, trust_batch=self._unchecked)
            return
        for part, then in self._decided_on.items():
            if then is None:
                # missing when decided, so started at its earliest offset, which holds for the
                # topic that appeared since (or its id was unknown): a change from now on is one
                self._decided_on[part] = ids.get(part[0])

    # --- the checkpoint ------------------------------------------------------------------------
    # Checkpoints run on a writer thread, one at a time, so the poll loop reads and decodes the
    # next batch while PostgreSQL takes this one: both cores busy instead of taking turns (ingest
    # benchmark, 200k events: 104k -> 149k events/s, measured). The main thread touches the
    # connection and the ownership only after ``_join``: nothing it does races the writer.

    def checkpoint(self) -> None:
        """Commit the batch: rows, dead letters, partials and offsets in one transaction.

        Returns once it is settled: committed (after-commit hooks run), fenced, or given up
        because the worker is stopping while PostgreSQL is unreachable."""
        self._join()
        self._submit()
        self._join()

    def _submit(self) -> None:
        """Hand the batch to the writer thread (after the one in flight has settled)."""
        self._join()
        batch = self.batch
        if not batch:
            return
        expected = {p: self.owned.expected.get(p) for p in batch.progress}
        ids = {p[0]: self._decided_on.get(p) for p in batch.progress}
        self.batch = Batch()
        self._inflight = (batch, self._writer.submit(self._write, batch, expected, ids))

    def _write(
        self,
        batch: Batch,
        expected: dict[Partition, StoredOffset | None],
        topic_ids: dict[str, str | None],
    ) -> _Outcome:
        """On the writer thread: the transaction, retried while PostgreSQL is unavailable, then
        the after-commit hooks (in commit order, as soon as the commit is durable)."""
        started = time.perf_counter()
        fenced: list[Fenced] = []
        confirmed: list[AlreadyCommitted] = []

        def write(conn: psycopg.Connection) -> None:
            try:
                write_batch_exactly_once(
                    conn, self.settings.group_id, batch, expected, self.in_transaction, topic_ids
                )
            except Fenced as err:
                fenced.append(err)
            except AlreadyCommitted as err:
                confirmed.append(err)

        if not self._with_db_retry("checkpoint", write):
            return _Outcome(committed=False)
        if fenced:
            return _Outcome(committed=False, fenced=fenced[0])
        if confirmed:
            self._confirmed(batch, confirmed[0])
        seconds = time.perf_counter() - started
        for hook in self.after_commit:
            hook(batch)
        return _Outcome(committed=True, seconds=seconds)

    def _confirmed(self, batch: Batch, found: AlreadyCommitted) -> None:
        """A retry found the batch committed: the connection broke after COMMIT was sent and
        the reply was lost. It is a committed batch like any other: its windows are evaluated."""
        metrics.CONFIRMED_COMMITS.inc()
        log.warning(
            "batch of %d was committed by an attempt whose reply was lost (offsets already at %s)",
            len(batch),
            found,
        )
        if self.touched_by is not None:
            # refused rows were dead-lettered in that commit, but their windows were not
            # written: evaluating them anyway costs one more look at an unchanged window
            batch.touched_windows = self.touched_by([rec for _, rec in batch.records])

    def _join(self) -> None:
        """Wait for the batch in flight and settle it: ownership and metrics when committed,
        a reseek when fenced, back in front of the current batch when given up."""
        if self._inflight is None:
            return
        batch, future = self._inflight
        self._inflight = None
        outcome = future.result()  # re-raises what the writer raised
        if outcome.committed:
            for part, prog in batch.progress.items():
                if part in self.owned.expected:
                    self.owned.expected[part] = StoredOffset(
                        prog.generation, prog.next_offset, prog.last_digest
                    )
            self._count(batch, outcome.seconds)
        elif outcome.fenced is not None:
            metrics.FENCED.inc()
            log.warning(
                "batch of %d dropped, offsets moved under us: %s", len(batch), outcome.fenced
            )
            parts = set(batch.progress)
            # what was read after the fenced batch follows it: drop it too, the reseek rereads it
            self.batch.drop_partitions(parts)
            self._reseek(parts)
        else:
            # nothing of it was committed, so nothing read after it may be committed alone
            batch.absorb(self.batch)
            self.batch = batch

    def _count(self, batch: Batch, seconds: float) -> None:
        self.committed_batches += 1
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_SECONDS.observe(seconds)
        for counter, pairs in (
            (metrics.WRITTEN, batch.records),
            (metrics.DEAD_LETTERED, batch.rejected),
        ):
            per_topic: dict[str, int] = {}
            for msg, _ in pairs:
                per_topic[msg.topic] = per_topic.get(msg.topic, 0) + 1
            for topic, count in per_topic.items():
                counter.labels(topic).inc(count)

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
        # locals and one counter update per topic and call: labels().inc() per message cost
        # ~2 µs of the ~12 µs a message took (measured)
        batch = self.batch
        generations = self.owned.generation
        kinds = self._kinds
        max_bytes = self.settings.max_message_bytes
        consumed: dict[str, int] = {}
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
            if topic in kinds:
                kind = kinds[topic]
            else:
                kind = kinds[topic] = self._kind(topic)
            if generation is None or kind is None:
                continue
            consumed[topic] = consumed.get(topic, 0) + 1
            if not batch:
                # consume() waits out its whole timeout: count the batch's age from the start of
                # that wait, or the first message waits up to twice RTMH_BATCH_MAX_MS (measured
                # by bench detect: batches 420 ms apart at 200 ms, 217-237 ms after)
                self.batch_started = self._poll_began
            batch.add(rec, decode(rec, kind, max_bytes=max_bytes), generation)
        for topic, count in consumed.items():
            metrics.CONSUMED.labels(topic).inc(count)

    def _report_lag(self, consumer: Consumer) -> None:
        """High watermark minus the committed next offset, from the last fetch responses (no
        request). A metric only: the embedded broker under-reports high watermarks."""
        for (topic, partition), stored in list(self.owned.expected.items()):
            try:
                _low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), cached=True
                )
            except Exception:  # not fetched yet, or the partition just moved
                continue
            if high is not None and high >= 0:
                done = stored.next_offset if stored is not None else 0
                metrics.LAG.labels(topic, str(partition)).set(max(0, int(high) - done))

    def _maintain(self) -> None:
        self._join()

        def run(conn: psycopg.Connection) -> None:
            for line in maintain_partitions(conn, 2, self.settings.retention_days):
                log.info("raw_events partitions: %s", line)

        self._with_db_retry("partition maintenance", run)

    def run(self) -> None:
        s = self.settings
        created = ensure_topics(self.bootstrap, self.topics, s.partitions, admin=self._admin)
        self._created_at_start = set(created)
        self._maintain()
        if self._reader is None:
            self._reader = MessageReader(self.bootstrap)
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
        _TUNING.acquire()
        max_wait = s.batch_max_ms / 1000
        next_topic_check = time.monotonic() + TOPIC_CHECK_SECONDS
        next_maintenance = time.monotonic() + MAINTENANCE_SECONDS
        next_gc = time.monotonic() + GC_SECONDS
        next_recheck = 0.0
        try:
            while not self._stop.is_set():
                room = s.batch_max_messages - len(self.batch)
                wait = (
                    max_wait
                    if not self.batch
                    else max(0.0, self.batch_started + max_wait - time.monotonic())
                )
                self._poll_began = time.monotonic()
                raw = consumer.consume(num_messages=min(room, 10_000), timeout=min(wait, 0.5))
                if not self._unchecked:
                    self._take(raw)
                # else: read around the moment every broker went away, so maybe from a log that
                # replaced the one the starts were decided on; _recheck moves every partition to
                # a start decided again, so nothing dropped here is skipped
                if self._out_of_range:
                    self._redecide_out_of_range(consumer)
                if self._inflight is not None and self._inflight[1].done():
                    self._join()
                now = time.monotonic()
                if self.batch and (
                    len(self.batch) >= s.batch_max_messages or now >= self.batch_started + max_wait
                ):
                    self._submit()
                if self._unchecked and now >= next_recheck:
                    next_recheck = now + RECHECK_RETRY_SECONDS
                    ids = self._current_ids()  # None: no broker back yet
                    if ids is not None:
                        self._recheck(consumer, ids, self._recreated(ids, []), trust_batch=True)
                if now >= next_topic_check:
                    next_topic_check = now + TOPIC_CHECK_SECONDS
                    self._check_topics(consumer)
                    self._report_lag(consumer)
                if now >= next_maintenance:
                    next_maintenance = now + MAINTENANCE_SECONDS
                    self._maintain()
                if now >= next_gc:
                    next_gc = now + GC_SECONDS
                    gc.collect()
            self.checkpoint()
        finally:
            self._stop.set()  # a checkpoint still retrying (we are here on an error) gives up
            self._writer.shutdown(wait=True)
            _TUNING.release()
            for hook in self.on_stop:
                hook()
            consumer.close()  # leaves the group at once, so partitions move without waiting
            self._reader.close()
            if self._conn is not None:
                self._conn.close()
            log.info("worker stopped after %d committed batches", self.committed_batches)
