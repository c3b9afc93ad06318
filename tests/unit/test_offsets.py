"""Where a partition starts: stored offset, a reset log, or a re-created topic (ingest/offsets)."""

from __future__ import annotations

from rtmh.ingest.offsets import Probe, StartDecision, decide_start, recreated_topics
from rtmh.ingest.store import StoredOffset

STORED = StoredOffset(generation=2, next_offset=500, last_digest=b"d" * 16)


def test_nothing_stored_starts_at_the_earliest_offset_as_generation_0() -> None:
    assert decide_start("t[0]", None, None) == StartDecision(None, 0, None)
    assert decide_start("t[0]", None, None, "re-created") == StartDecision(None, 0, None)


def test_matching_digest_continues_at_the_stored_offset() -> None:
    decision = decide_start("t[0]", STORED, Probe((0, 490), STORED.last_digest))
    assert decision == StartDecision(500, 2, STORED)


def test_missing_or_different_message_is_a_reset() -> None:
    for digest in (None, b"x" * 16):
        decision = decide_start("t[0]", STORED, Probe((0, 10), digest))
        assert (decision.offset, decision.generation, decision.expected) == (None, 3, STORED)
        assert decision.warning is not None and "broker log was reset" in decision.warning


def test_retention_below_a_trustworthy_low_watermark_is_no_reset() -> None:
    decision = decide_start("t[0]", STORED, Probe((700, 900), None))
    assert (decision.offset, decision.generation) == (700, 2)
    assert decision.warning is not None and "retention removed offsets 500..699" in decision.warning


def test_a_recreated_topic_is_a_reset_even_when_the_digest_matches() -> None:
    # the worker went on fetching at its old position in the new log and committed message 499
    # from it: the read-back would match, the new log's [0, 500) would never be read
    decision = decide_start("t[0]", STORED, Probe((0, 800), STORED.last_digest), "id changed")
    assert (decision.offset, decision.generation, decision.expected) == (None, 3, STORED)
    assert decision.warning is not None and "id changed" in decision.warning


def test_recreated_topics_by_id_change_and_by_our_own_creation() -> None:
    decided_on: dict[str, str | None] = {"a": "A1", "b": "B1", "c": None, "d": "D1", "e": "E1"}
    current = {"a": "A2", "b": "B1", "c": "C1", "e": "E1"}
    found = recreated_topics(decided_on, current, created=["e"])
    assert set(found) == {"a", "e"}
    assert "A1 to A2" in found["a"]
    assert "created" in found["e"]


def test_a_topic_missing_when_decided_is_not_reset_again_when_it_appears() -> None:
    # its partitions already start at the earliest offset: what has been committed from the new
    # topic since would be stored a second time
    assert recreated_topics({"c": None}, {"c": "C1"}, created=[]) == {}


def test_a_missing_topic_or_one_without_ids_is_no_reset_by_itself() -> None:
    assert recreated_topics({"d": "D1"}, {}, created=[]) == {}
    assert recreated_topics({"d": None}, {}, created=[]) == {}


def test_only_owned_topics_are_considered() -> None:
    assert recreated_topics({}, {"x": "X2"}, created=["x"]) == {}
