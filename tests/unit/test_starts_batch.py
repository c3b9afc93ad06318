"""Deciding the starts of a whole assignment at once (issue 15): one read-back of the set, one
retry round for the partitions the broker did not answer, never a reset taken from silence.
Plain objects only: no broker."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping

from confluent_kafka import KafkaError
from prometheus_client import REGISTRY

from rtmh.ingest.batch import Partition, message_digest
from rtmh.ingest.offsets import AskAgain, Probe, StartDecision
from rtmh.ingest.starts import (
    CREATED_AGAIN,
    READ_BACK_SECONDS,
    Asked,
    OffsetReader,
    SetReader,
    Starts,
    decide_round,
    to_probe,
    with_topics_now,
)
from rtmh.ingest.store import StoredOffset
from rtmh.kafka.client import answer_for
from rtmh.records import KafkaMessage, ReadBack, ReadOutcome

FOUND, LATER, MISSING, UNKNOWN = (
    ReadOutcome.FOUND,
    ReadOutcome.LATER,
    ReadOutcome.MISSING,
    ReadOutcome.UNKNOWN,
)


def message(topic: str, partition: int, offset: int, value: bytes) -> KafkaMessage:
    return KafkaMessage(topic, partition, offset, b"k", value, 1_700_000_000_000)


def stored_for(msg: KafkaMessage, topic_id: str | None = "OLD") -> StoredOffset:
    """The offsets row a commit ending with ``msg`` leaves."""
    return StoredOffset(0, msg.offset + 1, message_digest(msg), topic_id)


def retries() -> float:
    return REGISTRY.get_sample_value("rtmh_ingest_probe_retries_total") or 0.0


# --- the pure parts ----------------------------------------------------------------------------
def test_a_round_decides_from_each_partitions_own_answer() -> None:
    same = message("t", 0, 9, b"a")
    other = message("t", 1, 9, b"b")
    asked = {
        ("t", 0): Asked(stored_for(same), None),
        ("t", 1): Asked(stored_for(other), None),
        ("t", 2): Asked(stored_for(message("t", 2, 9, b"c")), None),
        ("t", 3): Asked(None, None),
    }
    probes = {
        ("t", 0): to_probe(ReadBack(FOUND, same), None),
        ("t", 1): to_probe(ReadBack(FOUND, message("t", 1, 9, b"new log")), None),
        ("t", 2): to_probe(ReadBack(UNKNOWN, detail="no answer within 2 s"), None),
    }
    decided, again = decide_round(asked, probes)
    assert decided[("t", 0)] == (StartDecision(10, 0, asked[("t", 0)].row), None)
    reset, _ = decided[("t", 1)]
    assert (reset.offset, reset.generation) == (None, 1)
    assert decided[("t", 3)] == (StartDecision(None, 0, None), None)
    assert set(again) == {("t", 2)} and "could not read message 9 back" in again[("t", 2)].reason


def test_a_partition_the_reader_left_out_is_asked_again_never_continued() -> None:
    # continuing at the stored offset without an answer would skip a reset log's start
    asked = {("t", 0): Asked(stored_for(message("t", 0, 4, b"a")), None)}
    decided, again = decide_round(asked, {})
    assert not decided and isinstance(again[("t", 0)], AskAgain)


def test_partitions_the_ids_or_a_reason_settle_need_no_read() -> None:
    row = stored_for(message("t", 0, 4, b"a"), topic_id="OLD")
    assert Asked(row, None).needs_read()
    assert Asked(row, "OLD").needs_read()
    assert not Asked(row, "NEW").needs_read()  # a new topic id: a reset whatever the log says
    assert not Asked(row, None, CREATED_AGAIN).needs_read()
    assert not Asked(None, None).needs_read()
    decided, again = decide_round({("t", 0): Asked(row, "NEW")}, {})
    assert not again and decided[("t", 0)][0].generation == 1


def test_only_an_absence_carries_the_watermarks() -> None:
    found = message("t", 0, 4, b"a")
    assert to_probe(ReadBack(FOUND, found), (0, 9)) == Probe(None, FOUND, message_digest(found))
    assert to_probe(ReadBack(MISSING, detail="gone"), (5, 9)) == Probe(
        (5, 9), MISSING, None, "gone"
    )
    assert to_probe(ReadBack(UNKNOWN, detail="?"), (5, 9)) == Probe(None, UNKNOWN, None, "?")
    assert to_probe(ReadBack(LATER, found), None).outcome is LATER


def test_a_topic_check_updates_ids_and_names_created_topics() -> None:
    row = stored_for(message("a", 0, 4, b"x"))
    asked = {("a", 0): Asked(row, None), ("b", 0): Asked(row, "B1"), ("c", 0): Asked(row, "C1")}
    now = with_topics_now(asked, (["b"], {"a": "A2", "b": "B2"}))
    assert now[("a", 0)] == Asked(row, "A2")
    assert now[("b", 0)] == Asked(row, "B2", CREATED_AGAIN)
    assert now[("c", 0)] == Asked(row, "C1")  # not described now: what was known stays
    assert with_topics_now(asked, None) == asked  # the broker could not be asked


# --- one consumed event -> one read-back answer ---------------------------------------------------
class Event:
    """What consume() returns: a message, or an error tied to a partition."""

    def __init__(self, offset: int, code: int | None = None) -> None:
        self._offset, self._code = offset, code

    def error(self) -> KafkaError | None:
        return None if self._code is None else KafkaError(self._code)

    def offset(self) -> int:
        return self._offset

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000)


def test_each_event_answers_only_what_the_broker_said() -> None:
    def outcome(event: Event, offset: int = 7) -> ReadOutcome | None:
        answer = answer_for(event, offset)  # type: ignore[arg-type]
        return None if answer is None else answer.outcome

    assert outcome(Event(7)) is FOUND
    assert outcome(Event(9)) is LATER
    assert outcome(Event(5)) is None  # before the offset asked: keep waiting
    assert outcome(Event(7, KafkaError._PARTITION_EOF)) is MISSING  # the log ends at 7
    assert outcome(Event(8, KafkaError._PARTITION_EOF)) is None  # its end is past 7
    assert outcome(Event(7, KafkaError.OFFSET_OUT_OF_RANGE)) is MISSING
    assert outcome(Event(7, KafkaError._AUTO_OFFSET_RESET)) is MISSING
    assert outcome(Event(7, KafkaError._TRANSPORT)) is UNKNOWN
    assert outcome(Event(7, KafkaError.NOT_LEADER_FOR_PARTITION)) is UNKNOWN


# --- Starts.start_all with a reader and a broker of plain objects ------------------------------
class Logs:
    """Every partition's log as the fake broker holds it; ``silent``: partitions it does not
    answer a read-back for (a fetch beyond the end of an embedded broker's log)."""

    def __init__(self) -> None:
        self.messages: dict[tuple[Partition, int], KafkaMessage] = {}
        self.silent: set[Partition] = set()
        self.ends: dict[Partition, tuple[int, int]] = {}


class FakeSetReader:
    def __init__(self, logs: Logs) -> None:
        self.logs = logs
        self.calls: list[dict[Partition, int]] = []
        self.timeouts: list[float] = []
        self.watermark_calls: list[list[Partition]] = []

    def read_many(
        self, wanted: Mapping[Partition, int], timeout: float = 2.0
    ) -> dict[Partition, ReadBack]:
        self.calls.append(dict(wanted))
        self.timeouts.append(timeout)
        answers = {}
        for part, offset in wanted.items():
            found = self.logs.messages.get((part, offset))
            if part in self.logs.silent:
                answers[part] = ReadBack(UNKNOWN, detail=f"no answer within {timeout:g} s")
            elif found is not None:
                answers[part] = ReadBack(FOUND, found)
            else:
                answers[part] = ReadBack(MISSING, detail="the log ends before it")
        return answers

    def watermarks_many(
        self, parts: Collection[Partition], timeout: float = 2.0
    ) -> dict[Partition, tuple[int, int] | None]:
        self.watermark_calls.append(sorted(parts))
        return {p: self.logs.ends.get(p) for p in parts}

    def close(self) -> None:
        pass


class FakeOffsetReader:
    """Answers one offset at a time, like the fault-injecting readers of the integration tests."""

    def __init__(self, logs: Logs) -> None:
        self.inner = FakeSetReader(logs)

    def read(self, topic: str, partition: int, offset: int, timeout: float = 2.0) -> ReadBack:
        return self.inner.read_many({(topic, partition): offset}, timeout)[(topic, partition)]

    def watermarks(self, topic: str, partition: int) -> tuple[int, int] | None:
        return self.inner.watermarks_many([(topic, partition)])[(topic, partition)]

    def close(self) -> None:
        pass


class Backoff(threading.Event):
    """The stop event: records each wait instead of sleeping; stops the worker after ``stop_after``
    waits."""

    def __init__(self, stop_after: int = 1000) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return len(self.waits) >= self.stop_after


class FakeStarts(Starts):
    """Starts whose topic check answers from ``ids`` (the broker as it is now)."""

    def __init__(self, reader: SetReader | OffsetReader, stop: Backoff, ids: dict[str, str]):
        super().__init__("fake:9092", ["a", "b"], 4, None, stop, reader)  # type: ignore[arg-type]
        self.ids = ids
        self.checks: list[list[str]] = []

    def ensure_topics(self, topics: list[str]) -> tuple[list[str], dict[str, str]] | None:
        self.checks.append(list(topics))
        return [], {t: self.ids[t] for t in topics if t in self.ids}


def assignment(partitions: int) -> tuple[Logs, dict[Partition, StoredOffset]]:
    """Topic a: intact logs; topic b: new logs, shorter than the stored offsets (silent)."""
    logs = Logs()
    stored: dict[Partition, StoredOffset] = {}
    for topic in ("a", "b"):
        for p in range(partitions):
            msg = message(topic, p, 4, f"{topic}{p}".encode())
            stored[(topic, p)] = stored_for(msg, topic_id=f"{topic.upper()}1")
            if topic == "a":
                logs.messages[((topic, p), 4)] = msg
            else:
                logs.silent.add((topic, p))
    return logs, stored


def test_the_whole_assignment_is_read_back_in_one_call_and_a_new_id_settles_silence_at_once() -> (
    None
):
    logs, stored = assignment(50)
    reader = FakeSetReader(logs)
    stop = Backoff()
    # the ids were unknown at assignment; asked again, b's id is a new one
    starts = FakeStarts(reader, stop, {"a": "A1", "b": "B2"})
    before = retries()
    parts = sorted(stored)
    started = starts.start_all(parts, stored, None, {})
    assert len(reader.calls) == 1 and set(reader.calls[0]) == set(parts)
    assert all(offset == 4 for offset in reader.calls[0].values())
    assert reader.timeouts == [READ_BACK_SECONDS]
    assert stop.waits == []  # the new id decided them: no backoff, no second read
    assert starts.checks == [["b"]]  # the silent partitions' topic, asked once
    assert retries() - before == 50
    assert reader.watermark_calls == []  # nothing was MISSING
    for p in range(50):
        intact, intact_id = started[("a", p)]
        assert (intact.offset, intact.generation, intact_id) == (5, 0, None)
        reset, reset_id = started[("b", p)]
        assert (reset.offset, reset.generation, reset_id) == (None, 1, "B2")


def test_silence_is_asked_again_with_backoff_until_answered_never_a_reset() -> None:
    logs, stored = assignment(3)
    stop = Backoff()

    class HealsAfterThree(FakeSetReader):
        def read_many(
            self, wanted: Mapping[Partition, int], timeout: float = 2.0
        ) -> dict[Partition, ReadBack]:
            if len(self.calls) == 3:  # the broker answers from the fourth round on
                for part in list(logs.silent):
                    logs.messages[(part, 4)] = message(
                        part[0], part[1], 4, f"{part[0]}{part[1]}".encode()
                    )
                logs.silent.clear()
            return super().read_many(wanted, timeout)

    reader = HealsAfterThree(logs)
    starts = FakeStarts(reader, stop, {"a": "A1", "b": "B1"})  # b's id unchanged: no proof
    started = starts.start_all(sorted(stored), stored, {"a": "A1", "b": "B1"}, {})
    assert [sorted(call) for call in reader.calls[1:]] == [[("b", p) for p in range(3)]] * 3
    assert stop.waits == [0.5, 1.0, 2.0]
    assert all(started[part][0].generation == 0 for part in stored)
    assert all(started[part][0].offset == 5 for part in stored)


def test_watermarks_are_asked_once_for_the_partitions_found_missing() -> None:
    logs = Logs()
    stored: dict[Partition, StoredOffset] = {}
    for p in range(4):
        stored[("a", p)] = stored_for(message("a", p, 4, b"x"), topic_id="A1")
        logs.ends[("a", p)] = (10, 20) if p % 2 else (0, 2)
    reader = FakeSetReader(logs)
    started = FakeStarts(reader, Backoff(), {}).start_all(sorted(stored), stored, {"a": "A1"}, {})
    assert reader.watermark_calls == [[("a", p) for p in range(4)]]
    # low 10 > offset 4: retention; same id with the log ending at 2: truncated in place
    retained, truncated = started[("a", 1)][0], started[("a", 0)][0]
    assert (retained.offset, retained.generation) == (10, 0)
    assert (truncated.offset, truncated.generation) == (2, 1)


def test_stopping_during_the_backoff_returns_only_what_was_decided() -> None:
    logs, stored = assignment(2)
    stop = Backoff(stop_after=1)
    started = FakeStarts(FakeSetReader(logs), stop, {}).start_all(sorted(stored), stored, None, {})
    assert set(started) == {("a", 0), ("a", 1)}


def test_a_reader_of_single_offsets_is_asked_for_each_in_turn() -> None:
    logs, stored = assignment(2)
    reader = FakeOffsetReader(logs)
    starts = FakeStarts(reader, Backoff(), {"a": "A1", "b": "B2"})
    started = starts.start_all(sorted(stored), stored, None, {"b": CREATED_AGAIN})
    # b is known to be new: only a's partitions are read, one call each
    assert [list(call) for call in reader.inner.calls] == [[("a", 0)], [("a", 1)]]
    assert started[("b", 0)][0].generation == 1 and started[("a", 0)][0].generation == 0


def test_what_the_ids_settle_is_decided_at_once_and_only_the_rest_waits() -> None:
    """Topic a's logs are silent with an unchanged id (no proof of anything: read again after a
    backoff, once the broker answers); topic b's are silent and b has a new id (a reset now)."""
    logs, stored = assignment(2)
    for p in range(2):
        logs.silent.add(("a", p))
    stop = Backoff()

    class HealsAfterTheWait(FakeSetReader):
        def read_many(
            self, wanted: Mapping[Partition, int], timeout: float = 2.0
        ) -> dict[Partition, ReadBack]:
            if stop.waits:
                logs.silent -= {("a", 0), ("a", 1)}
            return super().read_many(wanted, timeout)

    reader = HealsAfterTheWait(logs)
    starts = FakeStarts(reader, stop, {"a": "A1", "b": "B2"})
    started = starts.start_all(sorted(stored), stored, {"a": "A1", "b": "B1"}, {})
    assert starts.checks == [["a", "b"]]
    assert stop.waits == [0.5]
    assert [sorted(call) for call in reader.calls[1:]] == [[("a", 0), ("a", 1)]]
    assert all(started[("a", p)][0].offset == 5 for p in range(2))
    assert all(started[("b", p)][0].generation == 1 for p in range(2))
