"""Where a partition starts: stored offset, a reset log, or a re-created topic (ingest/offsets);
and the fence's continuity rule (ingest/store, ingest/batch)."""

from __future__ import annotations

from typing import Any

import pytest

from rtmh.ingest.batch import Batch, PartitionProgress
from rtmh.ingest.offsets import (
    AskAgain,
    Probe,
    StartDecision,
    decide_start,
    needs_probe,
    recreated_topics,
)
from rtmh.ingest.store import StoredOffset, _committed_before, continuity_error
from rtmh.records import DecodedRecord, KafkaMessage, Kind, ReadOutcome

STORED = StoredOffset(generation=2, next_offset=500, last_digest=b"d" * 16)
WITH_ID = StoredOffset(generation=2, next_offset=500, last_digest=b"d" * 16, topic_id="ID1")
FOUND, LATER, MISSING, UNKNOWN = (
    ReadOutcome.FOUND,
    ReadOutcome.LATER,
    ReadOutcome.MISSING,
    ReadOutcome.UNKNOWN,
)


def decided(*args: Any) -> StartDecision:
    decision = decide_start(*args)
    assert isinstance(decision, StartDecision), decision
    return decision


def test_nothing_stored_starts_at_the_earliest_offset_as_generation_0() -> None:
    assert decide_start("t[0]", None, None) == StartDecision(None, 0, None)
    assert decide_start("t[0]", None, None, "re-created") == StartDecision(None, 0, None)


def test_matching_digest_continues_at_the_stored_offset() -> None:
    decision = decided("t[0]", STORED, Probe(None, FOUND, STORED.last_digest))
    assert decision == StartDecision(500, 2, STORED)


def test_the_same_offset_holding_a_different_message_is_a_reset() -> None:
    decision = decided("t[0]", STORED, Probe(None, FOUND, b"x" * 16))
    assert (decision.offset, decision.generation, decision.expected) == (None, 3, STORED)
    assert decision.warning is not None and "broker log was reset" in decision.warning


def test_a_later_offset_is_a_gap_not_a_reset() -> None:
    # message 499 compacted away (or a transaction marker): the log is the same one
    decision = decided("t[0]", STORED, Probe(None, LATER, None, "at 503"))
    assert decision == StartDecision(500, 2, STORED)


@pytest.mark.parametrize("detail", ["no answer within 2 s", "Broker: Not leader for partition"])
def test_no_answer_is_asked_again_never_a_reset(detail: str) -> None:
    for stored in (STORED, WITH_ID):
        decision = decide_start("t[0]", stored, Probe(None, UNKNOWN, None, detail), None, "ID1")
        assert isinstance(decision, AskAgain)
        assert detail in decision.reason and "499" in decision.reason


def test_missing_without_watermarks_is_asked_again() -> None:
    assert isinstance(decide_start("t[0]", STORED, Probe(None, MISSING)), AskAgain)


def test_missing_from_a_shorter_log_is_a_reset() -> None:
    decision = decided("t[0]", STORED, Probe((0, 10), MISSING, None, "the log ends at 10"))
    assert (decision.offset, decision.generation, decision.expected) == (None, 3, STORED)
    assert decision.warning is not None and "the log ends at 10" in decision.warning


def test_a_log_cut_short_under_the_same_topic_id_continues_at_its_end() -> None:
    # an unclean leader election: [0, 420) is the log already stored, new messages take the
    # offsets from 420 on, under the next generation so they do not collide with the old ones
    decision = decided("t[0]", WITH_ID, Probe((0, 420), MISSING), None, "ID1")
    assert (decision.offset, decision.generation, decision.expected) == (420, 3, WITH_ID)
    assert decision.warning is not None and "truncated" in decision.warning


def test_retention_below_a_trustworthy_low_watermark_is_no_reset() -> None:
    decision = decided("t[0]", STORED, Probe((700, 900), MISSING))
    assert (decision.offset, decision.generation) == (700, 2)
    assert decision.warning is not None and "retention removed offsets 500..699" in decision.warning


def test_a_recreated_topic_is_a_reset_even_when_the_digest_matches() -> None:
    # the worker went on fetching at its old position in the new log and committed message 499
    # from it: the read-back would match, the new log's [0, 500) would never be read
    decision = decided("t[0]", STORED, Probe(None, FOUND, STORED.last_digest), "id changed")
    assert (decision.offset, decision.generation, decision.expected) == (None, 3, STORED)
    assert decision.warning is not None and "id changed" in decision.warning


def test_a_recreated_topic_whose_stored_offset_names_the_new_log_starts_there() -> None:
    # the embedded broker's log roll moved the offset to the new log (offset 0, generation on,
    # its topic id): starting again from the beginning would read it under yet another
    # generation, and what a fenced batch already committed from it would be stored twice
    rolled = StoredOffset(4, 0, None, "ID2")
    decision = decided("t[0]", rolled, None, "its topic id changed from ID1 to ID2", "ID2")
    assert (decision.offset, decision.generation, decision.warning) == (0, 4, None)
    # the same row on a log created after the roll: a reset as before
    again = decided("t[0]", rolled, None, "its topic id changed from ID2 to ID3", "ID3")
    assert (again.offset, again.generation) == (None, 5)


def test_a_stored_topic_id_that_differs_is_a_reset_without_reading_back() -> None:
    assert not needs_probe(WITH_ID, "ID2")
    assert needs_probe(WITH_ID, "ID1") and needs_probe(WITH_ID, None) and needs_probe(STORED, "X")
    decision = decided("t[0]", WITH_ID, None, None, "ID2")
    assert (decision.offset, decision.generation, decision.expected) == (None, 3, WITH_ID)
    assert decision.warning is not None and "ID1" in decision.warning and "ID2" in decision.warning


def test_an_unknown_id_on_either_side_settles_nothing() -> None:
    probe = Probe(None, FOUND, STORED.last_digest)
    assert decided("t[0]", STORED, probe, None, "ID9") == StartDecision(500, 2, STORED)
    assert decided("t[0]", WITH_ID, probe, None, None) == StartDecision(500, 2, WITH_ID)


# --- the fence's continuity rule -------------------------------------------------------------


def progress(
    first: int, next_offset: int, generation: int = 2, rewound: int | None = None
) -> PartitionProgress:
    return PartitionProgress(generation, next_offset, b"d" * 16, first, rewound)


def test_a_batch_continuing_the_stored_offset_passes() -> None:
    assert continuity_error(("t", 0), STORED, progress(500, 800)) is None


def test_a_batch_starting_before_the_stored_offset_is_refused() -> None:
    # librdkafka moved the position back by itself: [0, 500) would be stored a second time and
    # next_offset would go backwards
    error = continuity_error(("t", 0), STORED, progress(0, 300))
    assert error is not None and "starts at offset 0" in error and "500" in error


def test_a_batch_starting_after_the_stored_offset_passes() -> None:
    # offsets without messages (transaction markers, compaction): refusing would re-read forever
    assert continuity_error(("t", 0), STORED, progress(503, 800)) is None


def test_a_new_generation_or_a_new_partition_starts_anywhere() -> None:
    assert continuity_error(("t", 0), STORED, progress(0, 300, generation=3)) is None
    assert continuity_error(("t", 0), None, progress(0, 300, generation=0)) is None


def test_offsets_going_backwards_within_a_batch_are_refused() -> None:
    error = continuity_error(("t", 0), STORED, progress(500, 600, rewound=0))
    assert error is not None and "backwards within the batch" in error


def message(offset: int, partition: int = 0) -> KafkaMessage:
    return KafkaMessage("t", partition, offset, None, b"{}", None)


RECORD = DecodedRecord(Kind.LOGS, "{}", 0.0, "svc")


def test_batch_records_first_offsets_and_a_position_that_moved_back() -> None:
    batch = Batch()
    for offset in (500, 501, 505):
        batch.add(message(offset), RECORD, 2)
    batch.add(message(7, partition=1), RECORD, 2)
    assert batch.progress[("t", 0)].first_offset == 500
    assert batch.progress[("t", 0)].next_offset == 506
    assert batch.progress[("t", 0)].rewound_at is None
    assert batch.progress[("t", 1)].first_offset == 7
    batch.add(message(0), RECORD, 2)
    batch.add(message(1), RECORD, 2)
    assert batch.progress[("t", 0)].rewound_at == 0
    assert batch.progress[("t", 0)].next_offset == 2


def test_absorbing_a_later_batch_keeps_the_first_offset_and_sees_a_rewind_between() -> None:
    first, later = Batch(), Batch()
    first.add(message(500), RECORD, 2)
    later.add(message(501), RECORD, 2)
    later.add(message(9, partition=1), RECORD, 2)
    first.absorb(later)
    assert first.progress[("t", 0)].first_offset == 500
    assert first.progress[("t", 0)].rewound_at is None
    assert first.progress[("t", 1)].first_offset == 9
    again = Batch()
    again.add(message(3), RECORD, 2)
    first.absorb(again)
    assert first.progress[("t", 0)].rewound_at == 3


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


# --- a lost COMMIT reply, told apart from a rewind ------------------------------------------


def test_offsets_already_at_the_batch_end_after_a_lost_reply_mean_committed() -> None:
    prog = progress(500, 800)
    found = {("t", 0): (2, 800, b"d" * 16)}
    assert _committed_before({("t", 0): STORED}, {("t", 0): prog}, found)


def test_a_rewound_batch_ending_at_the_stored_offset_did_not_commit() -> None:
    # re-read from offset 0 up to exactly the stored 500: the row says where the batch ends,
    # but it said so before the batch too (the batch was never committed: the fence refuses it)
    prog = progress(0, 500)
    found = {("t", 0): (2, 500, b"d" * 16)}
    assert not _committed_before({("t", 0): STORED}, {("t", 0): prog}, found)


def test_offsets_elsewhere_are_no_commit_of_ours() -> None:
    prog = progress(500, 800)
    assert not _committed_before({("t", 0): STORED}, {("t", 0): prog}, {})
    other = {("t", 0): (2, 900, b"e" * 16)}
    assert not _committed_before({("t", 0): STORED}, {("t", 0): prog}, other)
