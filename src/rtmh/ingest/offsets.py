"""Where a newly assigned partition starts: the offset stored in PostgreSQL, unless the broker's
log was reset underneath it.

The embedded broker forgets everything on restart and reports wrong high watermarks, and a fetch
beyond the end of its log returns silence instead of OFFSET_OUT_OF_RANGE (DESIGN.md). So the
message just before the stored offset is read back and its digest compared with the one stored at
commit time: missing or different means a new log, started from the beginning under a new
generation so (generation, topic, partition, offset) stays unique.
"""

from __future__ import annotations

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


def decide_start(part: str, stored: StoredOffset | None, probe: Probe | None) -> StartDecision:
    if stored is None:
        return StartDecision(None, 0, None)
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
    return StartDecision(
        None,
        stored.generation + 1,
        stored,
        f"{part}: broker log was reset (stored offset {stored.next_offset}, broker high "
        f"watermark {high}, message {stored.next_offset - 1} {what}); consuming the new log "
        f"from its earliest offset as generation {stored.generation + 1}",
    )
