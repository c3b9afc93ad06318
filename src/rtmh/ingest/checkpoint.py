"""The checkpoint writer: batches go to PostgreSQL on a thread of their own, one at a time.

The poll loop fills ``Checkpointer.batch``; ``submit`` hands it to the writer thread, which runs
the exactly-once transaction (``store.write_batch_exactly_once``: rows, dead letters, window
partials and offsets together), retried while PostgreSQL is unavailable, then the after-commit
hooks. ``join`` settles the batch on the poll loop's thread: ownership and metrics when it
committed, the partitions to read again when it was fenced, back in front of the current batch
when the worker gave up on it (stopping while PostgreSQL is down).

Why a thread: the poll loop reads and decodes the next batch while PostgreSQL takes this one, so
both cores are busy instead of taking turns (ingest benchmark, 200k events: 104k -> 149k
events/s, measured). The poll loop touches the connection and the ownership only after ``join``:
nothing it does races the writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch, Partition
from rtmh.ingest.database import Database
from rtmh.ingest.offsets import StartDecision
from rtmh.ingest.safety_net import InTransaction
from rtmh.ingest.store import (
    AlreadyCommitted,
    Fenced,
    StoredOffset,
    write_batch_exactly_once,
)
from rtmh.records import DecodedRecord, WindowKey

log = logging.getLogger(__name__)

#: Run after a batch committed, on the writer thread, in commit order: the committed batch and
#: the windows it touched (the rules stage evaluates those).
AfterCommit = Callable[[Batch, set[WindowKey]], None]
#: the windows records touch, without writing anything: for a batch found committed after its
#: COMMIT reply was lost, whose in-transaction writes did not report them
TouchedBy = Callable[[Sequence[DecodedRecord]], set[WindowKey]]


class Timings(Protocol):
    """Where a worker's time goes (``rtmh bench ingest`` measures with these); every method is
    called on the thread named."""

    def took(self, messages: int) -> None:
        """Poll loop: ``messages`` were taken from one consume() call (only when > 0)."""

    def wrote(self, seconds: float) -> None:
        """Writer thread: one checkpoint's transaction and hooks took ``seconds``."""

    def waited(self, seconds: float) -> None:
        """Poll loop: it waited ``seconds`` for the writer to settle a batch."""


@dataclass
class Ownership:
    """Partitions this worker owns: their generation, the offsets row as last seen (what the
    fence expects), and the topic id their start was decided on (stored with the offsets)."""

    generation: dict[Partition, int] = field(default_factory=dict)
    expected: dict[Partition, StoredOffset | None] = field(default_factory=dict)
    #: None: the topic was missing when decided, or its id unknown
    topic_id: dict[Partition, str | None] = field(default_factory=dict)

    def take(self, part: Partition, decision: StartDecision, topic_id: str | None) -> None:
        self.generation[part] = decision.generation
        self.expected[part] = decision.expected
        self.topic_id[part] = topic_id

    def next_offsets(self) -> dict[Partition, int]:
        """The next offset committed of each owned partition (0: nothing yet)."""
        return {p: row.next_offset if row else 0 for p, row in list(self.expected.items())}

    def release(self, parts: set[Partition]) -> None:
        for part in parts:
            self.generation.pop(part, None)
            self.expected.pop(part, None)
            self.topic_id.pop(part, None)

    def committed(self, batch: Batch) -> None:
        for part, prog in batch.progress.items():
            if part in self.expected:
                self.expected[part] = StoredOffset(
                    prog.generation, prog.next_offset, prog.last_digest, self.topic_id.get(part)
                )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a checkpoint ended; neither committed nor fenced = given up (stopping, DB down)."""

    committed: bool
    fenced: Fenced | None = None
    seconds: float = 0.0


class Checkpointer:
    def __init__(
        self,
        group_id: str,
        db: Database,
        owned: Ownership,
        *,
        in_transaction: InTransaction | None,
        touched_by: TouchedBy | None,
        after_commit: list[AfterCommit],
        timings: Timings | None,
    ) -> None:
        self.group_id = group_id
        self.db = db
        self.owned = owned
        self.in_transaction = in_transaction
        self.touched_by = touched_by
        self.after_commit = after_commit
        self.timings = timings
        #: the batch the poll loop is filling
        self.batch = Batch()
        self.committed_batches = 0
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rtmh-checkpoint")
        self._inflight: tuple[Batch, Future[Outcome]] | None = None

    def settled(self) -> bool:
        """Whether the batch in flight (if any) is done and only waits to be joined."""
        return self._inflight is None or self._inflight[1].done()

    def checkpoint(self) -> set[Partition]:
        """Commit the batch now and wait until it is settled; returns the partitions to read
        again (fenced)."""
        fenced = self.join()
        self.submit()
        return fenced | self.join()

    def submit(self) -> set[Partition]:
        """Hand the batch to the writer thread (after the one in flight has settled); returns the
        partitions to read again when that one was fenced."""
        fenced = self.join()
        batch = self.batch
        if not batch:
            return fenced
        owned = self.owned
        expected = {p: owned.expected.get(p) for p in batch.progress}
        ids = {p[0]: owned.topic_id.get(p) for p in batch.progress}
        self.batch = Batch()
        self._inflight = (batch, self._writer.submit(self._write, batch, expected, ids))
        return fenced

    def join(self) -> set[Partition]:
        """Wait for the batch in flight and settle it; returns the partitions to read again
        because it was fenced (what was read after it from them is dropped too)."""
        if self._inflight is None:
            return set()
        batch, future = self._inflight
        self._inflight = None
        if self.timings is not None and not future.done():
            started = time.perf_counter()
            outcome = future.result()
            self.timings.waited(time.perf_counter() - started)
        else:
            outcome = future.result()  # re-raises what the writer raised
        if outcome.committed:
            self.owned.committed(batch)
            self._count(batch, outcome.seconds)
            return set()
        if outcome.fenced is not None:
            metrics.FENCED.inc()
            log.warning(
                "batch of %d dropped, offsets moved under us: %s", len(batch), outcome.fenced
            )
            parts = set(batch.progress)
            self.batch.drop_partitions(parts)
            return parts
        # nothing of it was committed, so nothing read after it may be committed alone
        batch.absorb(self.batch)
        self.batch = batch
        return set()

    def shutdown(self) -> None:
        self._writer.shutdown(wait=True)

    # --- on the writer thread ------------------------------------------------------------------
    def _write(
        self,
        batch: Batch,
        expected: dict[Partition, StoredOffset | None],
        topic_ids: dict[str, str | None],
    ) -> Outcome:
        """The transaction, retried while PostgreSQL is unavailable, then the after-commit hooks
        (in commit order, as soon as the commit is durable)."""
        started = time.perf_counter()
        fenced: list[Fenced] = []
        confirmed: list[AlreadyCommitted] = []
        touched: set[WindowKey] = set()

        def write(conn: psycopg.Connection) -> None:
            try:
                stored = write_batch_exactly_once(
                    conn, self.group_id, batch, expected, self.in_transaction, topic_ids
                )
                touched.clear()
                touched.update(stored.touched)
            except Fenced as err:
                fenced.append(err)
            except AlreadyCommitted as err:
                confirmed.append(err)

        if not self.db.run("checkpoint", write):
            return Outcome(committed=False)
        if fenced:
            return Outcome(committed=False, fenced=fenced[0])
        if confirmed:
            touched = self._confirmed(batch, confirmed[0])
        seconds = time.perf_counter() - started
        for hook in self.after_commit:
            hook(batch, touched)
        if self.timings is not None:
            self.timings.wrote(time.perf_counter() - started)
        return Outcome(committed=True, seconds=seconds)

    def _confirmed(self, batch: Batch, found: AlreadyCommitted) -> set[WindowKey]:
        """A retry found the batch committed: the connection broke after COMMIT was sent and
        the reply was lost. It is a committed batch like any other: its windows are evaluated."""
        metrics.CONFIRMED_COMMITS.inc()
        log.warning(
            "batch of %d was committed by an attempt whose reply was lost (offsets already at %s)",
            len(batch),
            found,
        )
        if self.touched_by is None:
            return set()
        # refused rows were dead-lettered in that commit, but their windows were not written:
        # evaluating them anyway costs one more look at an unchanged window
        return self.touched_by([rec for _, rec in batch.records])

    def _count(self, batch: Batch, seconds: float) -> None:
        self.committed_batches += 1
        metrics.BATCH_SIZE.observe(batch.messages)
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
