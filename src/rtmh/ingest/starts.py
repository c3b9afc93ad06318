"""Where assigned partitions start, asked of the broker: the message before each stored offset
read back (``offsets.decide_start`` decides from the answer), the topics' ids now, and a topic
created when it is missing.

The decision itself is pure (``offsets``); this is its I/O, done for the whole set of partitions
at once: one read-back of every stored offset that needs one, under one deadline, and one round
of retries for the read-backs the broker did not answer. Asked one partition at a time, a broker
silent on 100 of them held the assignment for 100 read-back timeouts (issue 15). An unanswered
read-back is asked again with backoff, never taken for a reset, until the worker stops; but
first the topics' ids are asked again at once, since the usual cause of silence is a new log
shorter than the stored offset (a broker that restarted empty is silent beyond its log's end),
and a new id settles that without a wait.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from rtmh.ingest import metrics
from rtmh.ingest.batch import Partition, message_digest
from rtmh.ingest.offsets import AskAgain, Probe, StartDecision, decide_start, needs_probe
from rtmh.ingest.store import StoredOffset
from rtmh.kafka.client import MessageReader, ensure_topics, make_admin, topic_ids
from rtmh.records import ReadBack, ReadOutcome

log = logging.getLogger(__name__)

#: longest wait between read-backs of a stored offset the broker did not answer
PROBE_RETRY_MAX_SECONDS = 5.0
#: how long one round of read-backs waits for the broker. A broker that holds the message answers
#: in milliseconds (100 partitions read back in ~0.2 s, measured); the deadline only decides how
#: soon silence is followed up, and silence is never a reset, so it is kept short: it is part of
#: every start after a broker restart (issue 15: 100 partitions, first commit within 5 s).
READ_BACK_SECONDS = 1.0
#: the reason a topic this worker had to create gives every start on it
CREATED_AGAIN = "the topic was missing and this worker created it again"


@dataclass(frozen=True, slots=True)
class Asked:
    """What one partition's start is decided on: its stored offset, its topic's id as known
    (None: unknown), and why its topic is known to be a new one (None: it is not)."""

    row: StoredOffset | None
    topic_id: str | None
    reason: str | None = None

    def needs_read(self) -> bool:
        return self.reason is None and self.row is not None and needs_probe(self.row, self.topic_id)


#: a partition's start, and the topic id it was decided on
Started = tuple[StartDecision, str | None]


class OffsetReader(Protocol):
    """A reader that answers one offset at a time (a test's, injecting faults)."""

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack: ...

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None: ...

    def close(self) -> None: ...


@runtime_checkable
class SetReader(Protocol):
    """A reader that answers a set of partitions at once (``MessageReader``)."""

    def read_many(
        self, wanted: Mapping[Partition, int], timeout: float = 2.0
    ) -> dict[Partition, ReadBack]: ...

    def watermarks_many(
        self, parts: Collection[Partition], timeout: float = 2.0
    ) -> dict[Partition, tuple[int, int] | None]: ...

    def close(self) -> None: ...


class OneAtATime:
    """An ``OffsetReader`` asked for a set: each partition in turn."""

    def __init__(self, reader: OffsetReader) -> None:
        self._reader = reader

    def read_many(
        self, wanted: Mapping[Partition, int], timeout: float = 2.0
    ) -> dict[Partition, ReadBack]:
        return {part: self._reader.read(*part, offset, timeout) for part, offset in wanted.items()}

    def watermarks_many(
        self, parts: Collection[Partition], timeout: float = 2.0
    ) -> dict[Partition, tuple[int, int] | None]:
        return {part: self._reader.watermarks(*part) for part in parts}

    def close(self) -> None:
        self._reader.close()


def to_probe(back: ReadBack, marks: tuple[int, int] | None) -> Probe:
    """The probe ``decide_start`` takes, from a read-back and (for an absence) the watermarks."""
    if back.outcome is ReadOutcome.FOUND and back.message is not None:
        return Probe(None, back.outcome, message_digest(back.message), back.detail)
    return Probe(
        marks if back.outcome is ReadOutcome.MISSING else None, back.outcome, None, back.detail
    )


#: what a partition no read-back answered for is taken as: no answer (asked again)
NO_ANSWER = Probe(None, ReadOutcome.UNKNOWN, None, "the reader gave no answer for it")


def decide_round(
    asked: Mapping[Partition, Asked], probes: Mapping[Partition, Probe]
) -> tuple[dict[Partition, Started], dict[Partition, AskAgain]]:
    """One round of decisions: the starts decided, and the partitions to ask about again (their
    read-back got no answer). A partition whose read-back is needed but absent from ``probes``
    is one to ask again, never a start at its stored offset."""
    decided: dict[Partition, Started] = {}
    again: dict[Partition, AskAgain] = {}
    for part, a in asked.items():
        probe = probes.get(part, NO_ANSWER) if a.needs_read() else None
        decision = decide_start(f"{part[0]}[{part[1]}]", a.row, probe, a.reason, a.topic_id)
        if isinstance(decision, AskAgain):
            again[part] = decision
        else:
            decided[part] = (decision, a.topic_id)
    return decided, again


def with_topics_now(
    asked: Mapping[Partition, Asked], found: tuple[list[str], dict[str, str]] | None
) -> dict[Partition, Asked]:
    """``asked`` with what a topic check found: each topic's id now, and the reason a topic this
    worker had to create is a new one. Unchanged when the broker could not be asked (None)."""
    if found is None:
        return dict(asked)
    created, ids = found
    return {
        part: replace(
            a,
            topic_id=ids.get(part[0], a.topic_id),
            reason=CREATED_AGAIN if part[0] in created else a.reason,
        )
        for part, a in asked.items()
    }


def _summary(again: Mapping[Partition, AskAgain], shown: int = 3) -> str:
    reasons = [a.reason for _, a in sorted(again.items())]
    more = f"; and {len(reasons) - shown} more" if len(reasons) > shown else ""
    return "; ".join(reasons[:shown]) + more


class Starts:
    """The broker-facing half of deciding starts, for one worker (its admin client, its reader,
    its stop event)."""

    def __init__(
        self,
        bootstrap: str,
        topics: list[str],
        partitions: int,
        admin: AdminClient,
        stop: threading.Event,
        reader: SetReader | OffsetReader | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.partitions = partitions
        self._admin = admin
        #: the admin client's connection went with the broker (``broker_lost``)
        self._admin_stale = False
        self._stop = stop
        #: given: a test's reader that fails on purpose; else opened by ``open``
        self._reader = reader

    def broker_lost(self) -> None:
        """Every broker went away: the next question goes to a new admin client.

        librdkafka's admin client waits about a second after its connection was closed before
        it connects again for a request (measured: 0.6 s for a request 0.4 s after the embedded
        broker's log roll closed it, every time), while a new client is answered in 6-10 ms. The
        worker asks the topics' ids right after the outage, before it consumes anything again."""
        self._admin_stale = True

    def _current_admin(self) -> AdminClient:
        if self._admin_stale:
            self._admin_stale = False
            self._admin = make_admin(self.bootstrap)
        return self._admin

    def open(self) -> None:
        if self._reader is None:
            self._reader = MessageReader(self.bootstrap)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def ensure_topics(self, topics: list[str]) -> tuple[list[str], dict[str, str]] | None:
        """Create whichever of ``topics`` are missing (the embedded broker forgets them on
        restart); the ones created and every topic's id now. None when the broker cannot be
        asked (logged)."""
        try:
            admin = self._current_admin()
            created = ensure_topics(self.bootstrap, topics, self.partitions, timeout=2, admin=admin)
            return created, topic_ids(self.bootstrap, topics, timeout=2, admin=admin)
        except Exception as err:
            log.warning("broker unreachable while checking %s: %s", ", ".join(topics), err)
            return None

    def current_ids(self) -> dict[str, str] | None:
        """The topics' ids now; None when the broker cannot be asked."""
        try:
            return topic_ids(self.bootstrap, self.topics, timeout=2, admin=self._current_admin())
        except (KafkaException, TimeoutError) as err:
            log.info("could not ask the broker for topic ids: %s", err)
            return None

    def probe_all(self, rows: Mapping[Partition, StoredOffset]) -> dict[Partition, Probe]:
        """Read the message before each stored offset back, the whole set at once; the
        watermarks only for those the broker says it does not hold (retention or a shorter log)."""
        if not rows:
            return {}
        reader = self._set_reader()
        backs = reader.read_many(
            {part: row.next_offset - 1 for part, row in rows.items()}, READ_BACK_SECONDS
        )
        missing = [p for p, back in backs.items() if back.outcome is ReadOutcome.MISSING]
        marks = reader.watermarks_many(missing) if missing else {}
        return {part: to_probe(back, marks.get(part)) for part, back in backs.items()}

    def start_all(
        self,
        parts: Collection[Partition],
        stored: Mapping[Partition, StoredOffset],
        ids: Mapping[str, str] | None,
        reasons: Mapping[str, str],
    ) -> dict[Partition, Started]:
        """Where each of ``parts`` starts, and the topic id that start was decided on.
        ``stored``: the offsets PostgreSQL holds; ``ids``: the topics' ids as known (None:
        unknown); ``reasons``: topics known to be new ones, with the reason.

        The read-backs of the whole set are asked at once; for those the broker does not answer
        the topics' ids are asked again at once (a broker that restarted empty shows a new id,
        or no topic: created here, as the topic check would), and what the ids do not settle is
        read back again after a backoff, never taken for a reset. Partitions left out of the
        answer were not decided because the worker is stopping."""
        decided: dict[Partition, Started] = {}
        pending = {
            part: Asked(
                stored.get(part), None if ids is None else ids.get(part[0]), reasons.get(part[0])
            )
            for part in parts
        }
        delay = 0.5
        rounds = 0
        while True:
            probes = self.probe_all(
                {p: a.row for p, a in pending.items() if a.row is not None and a.needs_read()}
            )
            done, again = decide_round(pending, probes)
            decided.update(done)
            if not again:
                return decided
            rounds += 1
            metrics.PROBE_RETRIES.inc(len(again))
            topics = sorted({part[0] for part in again})
            pending = with_topics_now({p: pending[p] for p in again}, self.ensure_topics(topics))
            # those the ids settled are decided now, without another read or a wait
            settled, _ = decide_round({p: a for p, a in pending.items() if not a.needs_read()}, {})
            decided.update(settled)
            pending = {p: a for p, a in pending.items() if p not in settled}
            if not pending:
                return decided
            if rounds == 1 or rounds % 10 == 0:
                log.warning(
                    "%d partition(s) not answered: %s; asking again in %.1f s (attempt %d). "
                    "Nothing is consumed from them until the broker answers.",
                    len(pending),
                    _summary({p: again[p] for p in pending}),
                    delay,
                    rounds,
                )
            if self._stop.wait(delay):
                return decided
            delay = min(delay * 2, PROBE_RETRY_MAX_SECONDS)

    def _set_reader(self) -> SetReader:
        assert self._reader is not None, "open() first"
        if isinstance(self._reader, SetReader):
            return self._reader
        return OneAtATime(self._reader)
