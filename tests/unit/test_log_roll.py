"""rtmh.embedded.log_roll's decisions: when a roll is due, and whether the group has committed
every message the broker acknowledged (on the topic ids of the logs to be deleted)."""

from __future__ import annotations

from rtmh.embedded.gate import GateStats, LogCounts
from rtmh.embedded.log_roll import (
    RollOutcome,
    RollPolicy,
    not_committed,
    roll_due,
    uncommitted,
)
from rtmh.ingest.store import StoredOffset


def stats(batches: int, size: int = 1000) -> GateStats:
    return GateStats({("t", 0): LogCounts(10, batches, size), ("t", 1): LogCounts(5, 1, 10)}, 15, 0)


def test_a_roll_is_due_past_either_bound() -> None:
    policy = RollPolicy(max_batches=100, max_bytes=10_000)
    assert roll_due(stats(99), policy) is None
    assert roll_due(stats(100), policy) == "a partition holds 100 batches (bound 100)"
    assert "MiB" in (roll_due(stats(1, size=10_000), policy) or "")


def row(next_offset: int, topic_id: str | None = "id1") -> StoredOffset:
    return StoredOffset(0, next_offset, b"d", topic_id)


def test_committed_means_at_the_end_on_the_same_log() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 0}
    ids = {"t": "id1"}
    assert not_committed(ends, {("t", 0): row(10), ("t", 1): row(7)}, ids) == []
    assert not_committed(ends, {("t", 0): row(9), ("t", 1): row(5)}, ids) == ["t[0] at 9 of 10"]
    # an offset stored for an older log of the topic says nothing about this one
    assert not_committed(ends, {("t", 0): row(10, "old"), ("t", 1): row(5)}, ids) == [
        "t[0] nothing of 10 committed"
    ]
    assert not_committed(ends, {("t", 1): row(5)}, ids) == ["t[0] nothing of 10 committed"]
    # no id known for the topic: the offsets alone decide
    assert not_committed(ends, {("t", 0): row(10, None), ("t", 1): row(5, None)}, {}) == []


def test_how_far_behind_counts_every_message_not_committed_on_this_log() -> None:
    ends = {("t", 0): 10, ("t", 1): 5, ("t", 2): 0}
    ids = {"t": "id1"}
    assert uncommitted(ends, {("t", 0): row(10), ("t", 1): row(5)}, ids) == 0
    assert uncommitted(ends, {("t", 0): row(4), ("t", 1): row(5)}, ids) == 6
    # an older log's offset, or none at all: every message of this log is still to commit
    assert uncommitted(ends, {("t", 0): row(10, "old")}, ids) == 15
    assert uncommitted(ends, {}, {}) == 15


def test_outcome_lines_say_what_happened() -> None:
    done = RollOutcome(True, "why", "", 0.123, 1000, 20, 2 * 2**20)
    assert done.line() == (
        "broker log rolled (why): 1,000 messages, 20 batches, 2.0 MiB freed; writes held 123 ms"
    )
    missed = RollOutcome(False, "why", "group g behind", 10.0)
    assert missed.line() == "broker log not rolled (why): group g behind; trying again later"
