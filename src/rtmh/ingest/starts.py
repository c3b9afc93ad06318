"""Where an assigned partition starts, asked of the broker: the message before the stored offset
read back (``offsets.decide_start`` decides from the answer), the topic's id now, and the topic
created when it is missing.

The decision itself is pure (``offsets``); this is its I/O: a read-back the broker does not answer
is asked again with backoff, never taken for a reset, until the worker stops.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from rtmh.ingest import metrics
from rtmh.ingest.batch import Partition, message_digest
from rtmh.ingest.offsets import AskAgain, Probe, StartDecision, decide_start, needs_probe
from rtmh.ingest.store import StoredOffset
from rtmh.kafka.client import MessageReader, ensure_topics, topic_ids
from rtmh.records import ReadOutcome

log = logging.getLogger(__name__)

#: longest wait between read-backs of a stored offset the broker did not answer
PROBE_RETRY_MAX_SECONDS = 5.0


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
        reader: MessageReader | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.partitions = partitions
        self._admin = admin
        self._stop = stop
        #: given: a test's reader that fails on purpose; else opened by ``open``
        self._reader = reader

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
            created = ensure_topics(
                self.bootstrap, topics, self.partitions, timeout=2, admin=self._admin
            )
            return created, topic_ids(self.bootstrap, topics, timeout=2, admin=self._admin)
        except Exception as err:
            log.warning("broker unreachable while checking %s: %s", ", ".join(topics), err)
            return None

    def current_ids(self) -> dict[str, str] | None:
        """The topics' ids now; None when the broker cannot be asked."""
        try:
            return topic_ids(self.bootstrap, self.topics, timeout=2, admin=self._admin)
        except (KafkaException, TimeoutError) as err:
            log.info("could not ask the broker for topic ids: %s", err)
            return None

    def probe(self, part: Partition, stored: StoredOffset) -> Probe:
        assert self._reader is not None
        back = self._reader.read(part[0], part[1], stored.next_offset - 1)
        if back.outcome is ReadOutcome.FOUND and back.message is not None:
            return Probe(None, back.outcome, message_digest(back.message), back.detail)
        # only an absence needs the watermarks (retention or a shorter log)
        marks = self._reader.watermarks(*part) if back.outcome is ReadOutcome.MISSING else None
        return Probe(marks, back.outcome, None, back.detail)

    def start(
        self, part: Partition, row: StoredOffset | None, topic_id: str | None, reason: str | None
    ) -> tuple[StartDecision, str | None] | None:
        """Where ``part`` starts, and the topic id that start was decided on. A read-back the
        broker does not answer is asked again, never taken for a reset; before each new attempt
        the topic's id is asked again (a broker that restarted empty shows a new id, or no topic:
        created here, as the topic check would). None when the worker stops before it knows."""
        delay = 0.5
        asked = 0
        while True:
            probe = None
            if reason is None and row is not None and needs_probe(row, topic_id):
                probe = self.probe(part, row)
            decision = decide_start(f"{part[0]}[{part[1]}]", row, probe, reason, topic_id)
            if not isinstance(decision, AskAgain):
                return decision, topic_id
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
            topic_id, reason = self.topic_now(part[0], topic_id, reason)

    def topic_now(
        self, topic: str, topic_id: str | None, reason: str | None
    ) -> tuple[str | None, str | None]:
        """The topic's id as the broker says now, and the reason it is a new topic if this
        worker had to create it; what was known before when the broker cannot be asked."""
        found = self.ensure_topics([topic])
        if found is None:  # the broker is unreachable: nothing new is known
            return topic_id, reason
        created, ids = found
        if created:
            reason = "the topic was missing and this worker created it again"
        return ids.get(topic, topic_id), reason
