"""Where a newly assigned partition starts: the offset stored in PostgreSQL, unless the broker's
log was reset underneath it.

The embedded broker forgets everything on restart and reports wrong high watermarks, and a fetch
beyond the end of its log returns silence instead of OFFSET_OUT_OF_RANGE (DESIGN.md). So the
message just before the stored offset is read back and its digest compared with the one stored at
commit time: missing or different means a new log, started from the beginning under a new
generation so (generation, topic, partition, offset) stays unique.

The read-back cannot see one case: a worker that went on fetching at its old position in the new
log (librdkafka keeps the position when a topic's id changes) and committed what it found there
under the old generation. Message n - 1 then matches the digest the worker itself stored, and
the new log's [0, n) is never read. So a topic known to be a new one (this worker had to create
it, or its topic id changed) is a reset for every partition without asking the log.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from rtmh.ingest.store import StoredOffset


@dataclass(frozen=True, slots=True)
class Probe:
    """What the broker holds around a stored offset."""

    watermarks: tuple[int, int] | None  # (low, high); high may under-report on tansu
    digest_before: bytes | None  # digest of the message at stored.next_offset - 1, if readable


@dataclass(frozen=True, slots=True)
class StartDecision:
    offset: int | None  # None = from the earliest offset the log holds
    generation: int
    expected: StoredOffset | None  # what the offsets row must still say at our first commit
    warning: str | None = None


def needs_probe(stored: StoredOffset | None) -> bool:
    return stored is not None and stored.next_offset > 0 and stored.last_digest is not None


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
    part: str, stored: StoredOffset | None, probe: Probe | None, recreated: str | None = None
) -> StartDecision:
    """Where ``part`` starts. ``recreated``: why its topic is known to be a new one (a reset
    whatever the probe would say), or None."""
    if stored is None:
        return StartDecision(None, 0, None)
    if recreated is not None:
        return _reset(
            stored,
            f"{part}: topic re-created ({recreated}); consuming it from its earliest offset as "
            f"generation {stored.generation + 1}, stored offset {stored.next_offset} belonged to "
            "the old one",
        )
    if not needs_probe(stored) or probe is None:
        return StartDecision(stored.next_offset, stored.generation, stored)
    if probe.digest_before is not None and probe.digest_before == stored.last_digest:
        return StartDecision(stored.next_offset, stored.generation, stored)
    if probe.digest_before is None and probe.watermarks is not None:
        low, _high = probe.watermarks
        if stored.next_offset - 1 < low:
            # a real Kafka's retention removed the message; its low watermark is trustworthy
            start = max(stored.next_offset, low)
            warning = None
            if start > stored.next_offset:
                warning = (
                    f"{part}: retention removed offsets {stored.next_offset}..{start - 1} "
                    "before they were consumed; continuing at the log start"
                )
            return StartDecision(start, stored.generation, stored, warning)
    high = probe.watermarks[1] if probe.watermarks else "unknown"
    what = "is missing" if probe.digest_before is None else "is a different message"
    return _reset(
        stored,
        f"{part}: broker log was reset (stored offset {stored.next_offset}, broker high "
        f"watermark {high}, message {stored.next_offset - 1} {what}); consuming the new log "
        f"from its earliest offset as generation {stored.generation + 1}",
    )


def _reset(stored: StoredOffset, warning: str) -> StartDecision:
    """From the earliest offset under the next generation; the fence still expects ``stored``."""
    return StartDecision(None, stored.generation + 1, stored, warning)
