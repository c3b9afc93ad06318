"""Bounds the embedded broker's log: once a partition holds enough batches (or the log enough
bytes), RTMH's topics are rolled, deleted and created again, at a moment when the hub's worker
group has committed every message the broker acknowledged and the gate holds every new write.

Why a roll: tansu 0.6.0 keeps each produced batch as an object in memory and lists all of a
partition's objects on every fetch that finds data (~0.6 µs an object); past ~20,000 batches in
one partition a fetch near the end of the log comes back empty after the listing, the consumer
asks again at once, and the broker spins at 100 % of a core (measured: 25,000 one-message
batches, a fetch of the last message took more than 60 s). Its DeleteRecords is unimplemented;
deleting a topic frees its memory (measured: 66 MB back to 23 MB, flat over six rolls).

The roll, under the gate (rtmh.embedded.gate):
1. hold new writes and wait for the ones sent to be acknowledged: the logs' ends are now known
   and fixed;
2. wait until PostgreSQL holds the group's offsets at those ends, on the current topic ids;
3. hold every Fetch and wait for those sent to be answered (a fetch that reaches a topic
   deleted under it gets an answer that crashes librdkafka 2.16), delete the topics and create
   them again (same partitions), read their new ids, then close every client connection: a
   client that reconnects reads the new topics' metadata before its held fetches go; one that
   still fetches with an old id later gets the gate's own answer (UNKNOWN_TOPIC_ID), never
   the broker's;
4. move the group's offsets to offset 0 of the new logs, one generation on (ingest's
   record_log_roll), so a worker still reading an old log is fenced, never duplicated;
5. let connections and writes through: clients reconnect, learn the new topics, and send
   what they held.
If 1 or 2 does not happen in time, nothing is deleted: the writes go on and the roll is tried
again later. Writes are not held at all while the group is far behind (``max_behind``): it
could not catch up within the hold, and holding writes every few seconds would only slow the
producers down while it tries. Only the hub's own group is waited for; other consumers of the
embedded broker lose what they have not read at a roll.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from confluent_kafka.admin import AdminClient

from rtmh.db.connect import connect
from rtmh.embedded.frames import topic_id_bytes
from rtmh.embedded.gate import Gate, GateStats, Partition
from rtmh.ingest.store import StoredOffset, load_offsets, record_log_roll
from rtmh.kafka.client import delete_topics, ensure_topics, make_admin, topic_ids

log = logging.getLogger(__name__)

#: how often the gate's counts are looked at
CHECK_SECONDS = 1.0
#: how often PostgreSQL is asked whether the group has caught up, while writes are held
CATCH_UP_POLL_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class RollPolicy:
    #: producer batches in one partition's log; the fetch cost grows with it (see above)
    max_batches: int = 1_000
    #: bytes of batches in the whole log (the broker's memory)
    max_bytes: int = 64 * 1024 * 1024
    #: the fewest seconds between two rolls, however fast the log fills
    min_interval_s: float = 10.0
    #: how long written batches may take to be acknowledged, writes held meanwhile
    drain_timeout_s: float = 5.0
    #: how long the group may take to commit the rest, writes held meanwhile
    catch_up_timeout_s: float = 10.0
    #: after a roll that did not happen
    retry_s: float = 5.0
    #: the most messages the group may have left to commit for writes to be held: a worker
    #: commits at least ~10,000 a second, so the rest fits well within catch_up_timeout_s
    max_behind: int = 20_000


def roll_due(stats: GateStats, policy: RollPolicy) -> str | None:
    """Why the log should be rolled now, or None."""
    if stats.max_batches >= policy.max_batches:
        return f"a partition holds {stats.max_batches:,} batches (bound {policy.max_batches:,})"
    if stats.size >= policy.max_bytes:
        return f"the log holds {stats.size / 2**20:.0f} MiB (bound {policy.max_bytes / 2**20:.0f})"
    return None


def not_committed(
    ends: Mapping[Partition, int],
    committed: Mapping[Partition, StoredOffset],
    ids: Mapping[str, str],
) -> list[str]:
    """The partitions whose acknowledged messages the group has not all committed, as text
    (empty: everything is in PostgreSQL). A stored offset counts only on the topic id it was
    committed on: one from an older log of the same topic says nothing about this one."""
    behind: list[str] = []
    for (topic, partition), end in sorted(ends.items()):
        if end <= 0:
            continue
        row = _on_this_log(committed.get((topic, partition)), ids.get(topic))
        if row is None:
            behind.append(f"{topic}[{partition}] nothing of {end:,} committed")
        elif row.next_offset < end:
            behind.append(f"{topic}[{partition}] at {row.next_offset:,} of {end:,}")
    return behind


def uncommitted(
    ends: Mapping[Partition, int],
    committed: Mapping[Partition, StoredOffset],
    ids: Mapping[str, str],
) -> int:
    """How many acknowledged messages the group has not committed (by the rule of
    ``not_committed``: an offset on an older topic id counts as nothing committed)."""
    total = 0
    for (topic, partition), end in ends.items():
        row = _on_this_log(committed.get((topic, partition)), ids.get(topic))
        total += max(end - (0 if row is None else row.next_offset), 0)
    return total


def _on_this_log(row: StoredOffset | None, current_id: str | None) -> StoredOffset | None:
    """``row`` if it was committed on the topic's current log (or no id is known), else None:
    an offset from an older log of the same topic says nothing about this one."""
    if row is None or (current_id is not None and row.topic_id != current_id):
        return None
    return row


@dataclass(frozen=True, slots=True)
class RollOutcome:
    rolled: bool
    #: why it was due, and what happened
    reason: str
    detail: str
    #: how long writes were held
    held_s: float
    messages: int = 0
    batches: int = 0
    size: int = 0

    def line(self) -> str:
        if self.rolled:
            return (
                f"broker log rolled ({self.reason}): {self.messages:,} messages, "
                f"{self.batches:,} batches, {self.size / 2**20:.1f} MiB freed; writes held "
                f"{self.held_s * 1000:.0f} ms"
            )
        return f"broker log not rolled ({self.reason}): {self.detail}; trying again later"


class _Marks:
    """Milliseconds from the moment writes were held to each step of a roll (debug log)."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        self.steps.append((step, time.monotonic() - self.began))

    def total(self) -> float:
        return time.monotonic() - self.began

    def __str__(self) -> str:
        return ", ".join(f"{step} {at * 1000:.0f} ms" for step, at in self.steps)


class LogRoller:
    """Rolls the embedded broker's ``topics`` for ``group_id`` when ``roll_due`` says so, from a
    thread of its own; each outcome goes to ``report``."""

    def __init__(
        self,
        gate: Gate,
        bootstrap: str,
        postgres_url: str,
        group_id: str,
        topics: list[str],
        partitions: int,
        policy: RollPolicy,
        report: Callable[[RollOutcome], None],
    ):
        self.gate = gate
        self.bootstrap = bootstrap
        self.postgres_url = postgres_url
        self.group_id = group_id
        self.topics = topics
        #: for a topic that is missing when a roll begins (the worker creates it with as many)
        self.partitions = partitions
        self.policy = policy
        self.report = report
        self.rolls = 0
        self.failures = 0
        self.last: RollOutcome | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-roll", daemon=True)
        self._admin: AdminClient | None = None
        self._conn: psycopg.Connection | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.policy.catch_up_timeout_s + self.policy.drain_timeout_s + 10)
        if self._conn is not None and not self._thread.is_alive():
            self._conn.close()

    def _run(self) -> None:
        not_before = 0.0
        while not self._stop.wait(CHECK_SECONDS):
            if time.monotonic() < not_before:
                continue
            try:
                reason = roll_due(self.gate.stats(), self.policy)
                if reason is None:
                    continue
                outcome = self.roll(reason)
            except Exception as err:  # the broker or PostgreSQL went away: try again later
                log.warning("broker log roll failed: %s", err)
                outcome = RollOutcome(False, "error", str(err), 0.0)
            self.last = outcome
            if outcome.rolled:
                self.rolls += 1
            else:
                self.failures += 1
            self.report(outcome)
            wait = self.policy.min_interval_s if outcome.rolled else self.policy.retry_s
            not_before = time.monotonic() + wait

    def roll(self, reason: str) -> RollOutcome:
        """One roll, now; writes are held for as long as it takes and let through after."""
        # connected and asked before writes are held: each new client's first request costs a
        # connection and a metadata round trip, all of it added to the hold
        admin = self._connected_admin()
        partitions = self._partition_counts(admin)
        lag = self._behind(admin)
        if lag > self.policy.max_behind:
            return RollOutcome(
                False,
                reason,
                f"group {self.group_id} is {lag:,} messages behind (more than "
                f"{self.policy.max_behind:,}); writes were not held",
                0.0,
            )
        marks = _Marks()
        before = self.gate.stats()
        ends = self.gate.hold(self.policy.drain_timeout_s)
        marks.mark("drained")
        if ends is None:
            return RollOutcome(
                False,
                reason,
                f"writes sent were not acknowledged within {self.policy.drain_timeout_s:g} s",
                marks.total(),
            )
        rolled: list[str] = []
        old_ids: list[bytes] = []
        try:
            ids = topic_ids(self.bootstrap, self.topics, timeout=5, admin=admin)
            behind = self._wait_for_commits(self._db(), ends, ids)
            marks.mark("committed")
            if behind:
                shown = ", ".join(behind[:3]) + (" …" if len(behind) > 3 else "")
                return RollOutcome(
                    False,
                    reason,
                    f"group {self.group_id} had not committed everything within "
                    f"{self.policy.catch_up_timeout_s:g} s ({shown})",
                    marks.total(),
                )
            if not self.gate.hold_fetches(self.policy.drain_timeout_s):
                return RollOutcome(
                    False,
                    reason,
                    f"fetches sent were not answered within {self.policy.drain_timeout_s:g} s",
                    marks.total(),
                )
            marks.mark("fetches held")
            old_ids = [topic_id_bytes(i) for i in ids.values()]
            delete_topics(admin, self.topics)
            rolled = list(self.topics)
            marks.mark("deleted")
            for count in sorted(set(partitions.values())):
                same = [t for t in self.topics if partitions[t] == count]
                ensure_topics(self.bootstrap, same, count, admin=admin, quiet=True)
            new_ids = topic_ids(self.bootstrap, self.topics, timeout=5, admin=admin)
            marks.mark("created")
            try:
                self._move_offsets(new_ids)
            except Exception as err:
                # the worker still finds the new logs by their topic ids (its topic check)
                log.warning("offsets not moved to the new logs after a roll: %s", err)
            marks.mark("offsets moved")
        finally:
            if rolled:
                # every client reconnects and reads the new topics' metadata before its held
                # fetches go (this one's connections too: a new client next time)
                self.gate.sever()
                self._admin = None
            self.gate.release(rolled, old_ids)
        log.debug("log roll: %s", marks)
        return RollOutcome(
            True,
            reason,
            "",
            marks.total(),
            sum(ends.values()),
            sum(c.batches for c in before.logs.values()),
            before.size,
        )

    def _behind(self, admin: AdminClient) -> int:
        """Messages acknowledged and not yet committed by the group, writes flowing."""
        ends = {part: c.end for part, c in self.gate.stats().logs.items()}
        ids = topic_ids(self.bootstrap, self.topics, timeout=5, admin=admin)
        return uncommitted(ends, load_offsets(self._db(), self.group_id, self.topics), ids)

    def _connected_admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = make_admin(self.bootstrap)
            self._admin.list_topics(timeout=5)
        return self._admin

    def wait_for_commits(self, timeout: float) -> list[str]:
        """Wait until the group has committed everything the broker acknowledged so far (what
        `up` does before it stops the worker); what is still missing after ``timeout``."""
        admin = self._connected_admin()
        ends = {part: c.end for part, c in self.gate.stats().logs.items()}
        ids = topic_ids(self.bootstrap, self.topics, timeout=5, admin=admin)
        # a connection of its own: the roller's thread may be using its one meanwhile
        with connect(self.postgres_url, autocommit=True) as conn:
            return self._wait_for_commits(conn, ends, ids, timeout)

    def _wait_for_commits(
        self,
        conn: psycopg.Connection,
        ends: dict[Partition, int],
        ids: dict[str, str],
        timeout: float | None = None,
    ) -> list[str]:
        deadline = time.monotonic() + (
            self.policy.catch_up_timeout_s if timeout is None else timeout
        )
        while True:
            stored = load_offsets(conn, self.group_id, self.topics)
            behind = not_committed(ends, stored, ids)
            if not behind or time.monotonic() >= deadline or self._stop.is_set():
                return behind
            time.sleep(CATCH_UP_POLL_SECONDS)

    def _partition_counts(self, admin: AdminClient) -> dict[str, int]:
        listed = admin.list_topics(timeout=5).topics
        return {
            t: len(listed[t].partitions) if t in listed else self.partitions for t in self.topics
        }

    def _move_offsets(self, new_ids: dict[str, str]) -> None:
        conn = self._db()
        with conn.transaction():
            for topic in self.topics:
                moved = record_log_roll(conn, self.group_id, topic, new_ids.get(topic))
                log.debug("offsets of %s moved to the new log: partitions %s", topic, moved)

    def _db(self) -> psycopg.Connection:
        """The roller's own connection, kept between rolls: a new one is 10-20 ms more of the
        hold. One that broke raised out of the roll (tried again later) and is opened again."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.postgres_url, autocommit=True)
        return self._conn
