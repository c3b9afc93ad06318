"""Where a newly assigned partition starts: the offset stored in PostgreSQL, unless the broker's
log under it is not the one that offset belongs to.

A stored offset remembers its topic id (migration 005): a topic deleted and created again, or
re-created by an embedded broker that forgot it, has a new id, and its log starts again at 0.
That settles most resets without asking the log. Otherwise the message just before the stored
offset is read back and its digest compared with the one stored at commit time; the answer is one
of four (``ReadOutcome``), and only the broker's own words count:

- the same message: the log is intact, continue;
- a different message at that offset: a new log, start it from its earliest offset under a new
  generation, so (generation, topic, partition, offset) stays unique;
- a later message (a gap: compaction, transaction markers): intact, continue;
- the broker says its log does not hold it: retention removed it (low watermark past it),
  or the log is shorter than what was stored: truncated in place (the same topic id: continue at
  its end) or a new log (a reset);
- no answer (an error, a timeout, a rolling restart): ask again; guessing "reset" here would
  store the whole log a second time.

Two cases the read-back cannot see, decided from what the worker knows instead: a topic this
worker had to create (it was missing, so any stored offset belongs to a log that is gone), and a
topic whose id changed while the worker held it (``recreated_topics``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from rtmh.ingest.store import StoredOffset
from rtmh.records import ReadOutcome


@dataclass(frozen=True, slots=True)
class Probe:
    """What the broker answered about the message at ``stored.next_offset - 1``."""

    watermarks: tuple[int, int] | None  # (low, high); high may under-report on tansu
    outcome: ReadOutcome
    digest: bytes | None = None  # FOUND: the digest of the message read back
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StartDecision:
    offset: int | None  # None = from the earliest offset the log holds
    generation: int
    expected: StoredOffset | None  # what the offsets row must still say at our first commit
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class AskAgain:
    """No decision yet: the broker did not answer; probe again after a while."""

    reason: str


def needs_probe(stored: StoredOffset | None, topic_id: str | None = None) -> bool:
    """Whether the start depends on reading message n - 1 back (ids that differ settle it)."""
    return (
        stored is not None
        and stored.next_offset > 0
        and stored.last_digest is not None
        and not ids_differ(stored, topic_id)
    )


def _names_this_log(stored: StoredOffset, topic_id: str | None) -> bool:
    """The stored offset was written for the topic as it is now: after a roll of the embedded
    broker's log (rtmh.embedded.log_roll), or by a worker that already started on it. A topic
    re-created since this worker decided is then no reason to start it again."""
    return topic_id is not None and stored.topic_id == topic_id


def ids_differ(stored: StoredOffset, topic_id: str | None) -> bool:
    return stored.topic_id is not None and topic_id is not None and stored.topic_id != topic_id


def recreated_topics(
    decided_on: Mapping[str, str | None], current: Mapping[str, str], created: Collection[str]
) -> dict[str, str]:
    """Topics whose partitions' starts were decided on a log that is no longer there, each with
    the reason.

    ``decided_on``: for each topic with partitions this worker owns, the topic id when their
    starts were decided (None: the topic was missing then, or the broker has no topic ids).
    ``current``: the ids now (missing topics left out). ``created``: topics this worker just
    had to create. A topic that was missing when its start was decided gets no second reset
    when it appears: that start is already its earliest offset."""
    found: dict[str, str] = {}
    for topic, then in decided_on.items():
        now = current.get(topic)
        if topic in created:
            found[topic] = "the topic was missing and this worker created it again"
        elif then is not None and now is not None and now != then:
            found[topic] = f"its topic id changed from {then} to {now}"
    return found


def decide_start(
    part: str,
    stored: StoredOffset | None,
    probe: Probe | None,
    recreated: str | None = None,
    topic_id: str | None = None,
) -> StartDecision | AskAgain:
    """Where ``part`` starts. ``recreated``: why its topic is known to be a new one (a reset
    whatever the probe would say), or None; ``topic_id``: the topic's id now (None: unknown).
    ``probe`` is needed only when ``needs_probe(stored)``; it is not read when the topic ids
    settle the start."""
    if stored is None:
        return StartDecision(None, 0, None)
    if recreated is not None and not _names_this_log(stored, topic_id):
        return _reset(
            stored,
            f"{part}: topic re-created ({recreated}); consuming it from its earliest offset as "
            f"generation {stored.generation + 1}, stored offset {stored.next_offset} belonged to "
            "the old one",
        )
    if ids_differ(stored, topic_id):
        return _reset(
            stored,
            f"{part}: topic id is {topic_id}, stored offset {stored.next_offset} belongs to "
            f"topic id {stored.topic_id} (deleted and created again, or the broker restarted "
            f"empty); consuming the new log from its earliest offset as generation "
            f"{stored.generation + 1}",
        )
    if not needs_probe(stored) or probe is None:
        return StartDecision(stored.next_offset, stored.generation, stored)
    return _from_probe(part, stored, probe, topic_id)


def _from_probe(
    part: str, stored: StoredOffset, probe: Probe, topic_id: str | None
) -> StartDecision | AskAgain:
    before = stored.next_offset - 1
    if probe.outcome is ReadOutcome.UNKNOWN:
        return AskAgain(f"{part}: could not read message {before} back ({probe.detail})")
    if probe.outcome is ReadOutcome.LATER:
        # nothing at n - 1 but a later message: offsets without messages, the log is intact
        return StartDecision(stored.next_offset, stored.generation, stored)
    if probe.outcome is ReadOutcome.FOUND:
        if probe.digest == stored.last_digest:
            return StartDecision(stored.next_offset, stored.generation, stored)
        return _reset(
            stored,
            f"{part}: broker log was reset (message {before} is a different message than the "
            f"one stored); consuming the new log from its earliest offset as generation "
            f"{stored.generation + 1}",
        )
    # MISSING: the broker says its log does not hold n - 1
    if probe.watermarks is None:
        return AskAgain(f"{part}: message {before} is gone and the watermarks are unknown")
    low, high = probe.watermarks
    if before < low:
        # retention removed it; a real Kafka's low watermark is trustworthy
        start = max(stored.next_offset, low)
        warning = None
        if start > stored.next_offset:
            warning = (
                f"{part}: retention removed offsets {stored.next_offset}..{start - 1} "
                "before they were consumed; continuing at the log start"
            )
        return StartDecision(start, stored.generation, stored, warning)
    if topic_id is not None and stored.topic_id == topic_id:
        # the same log, cut short (an unclean leader election): what it still holds is stored,
        # and the offsets from its end on will be new messages
        return StartDecision(
            high,
            stored.generation + 1,
            stored,
            f"{part}: broker log was truncated to {high} below the stored offset "
            f"{stored.next_offset} (same topic id); continuing at its end as generation "
            f"{stored.generation + 1}",
        )
    return _reset(
        stored,
        f"{part}: broker log was reset (stored offset {stored.next_offset}, message {before} "
        f"is missing: {probe.detail}, broker high watermark {high}); consuming the new log "
        f"from its earliest offset as generation {stored.generation + 1}",
    )


def _reset(stored: StoredOffset, warning: str) -> StartDecision:
    """From the earliest offset under the next generation; the fence still expects ``stored``."""
    return StartDecision(None, stored.generation + 1, stored, warning)
