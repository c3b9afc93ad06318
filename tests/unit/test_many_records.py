"""One message, many records: the batch keeps each with its index, COPY text carries the index,
and the topics each kind is read from."""

from __future__ import annotations

import pytest

from rtmh.config import ConfigError, load_settings
from rtmh.ingest.batch import Batch
from rtmh.ingest.copy_text import raw_events_copy, raw_events_row
from rtmh.records import DecodedRecord, KafkaMessage, Kind, Rejected

MSG = KafkaMessage("otlp_logs", 2, 41, b"k", b"\x0a...", 1_767_225_600_000)
NEXT = KafkaMessage("otlp_logs", 2, 42, None, b"\x0a...", 1_767_225_600_000)


def _rec(index: int, service: str = "api") -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.LOGS, data=f'{{"i": {index}}}', event_time=1_767_225_600.0, service=service,
        index=index,
    )  # fmt: skip


def test_batch_keeps_every_record_and_rejection_of_a_message() -> None:
    batch = Batch()
    bad = Rejected("no service", index=1, payload=b"\x0a.")
    batch.add(MSG, [_rec(0), bad, _rec(2)], generation=3)
    batch.add(NEXT, [], generation=3)  # an empty request: nothing stored, its offset counts
    assert batch.records == [(MSG, _rec(0)), (MSG, _rec(2))]
    assert batch.rejected == [(MSG, bad)]
    # RTMH_BATCH_MAX_MESSAGES bounds results held (an empty request counts one)
    assert (len(batch), batch.messages) == (4, 2)
    progress = batch.progress[("otlp_logs", 2)]
    assert (progress.first_offset, progress.next_offset, progress.generation) == (41, 43, 3)


def test_batch_takes_a_single_result_as_before() -> None:
    batch = Batch()
    batch.add(MSG, _rec(0), generation=0)
    batch.add(NEXT, Rejected("empty message"), generation=0)
    assert [r.index for _, r in batch.records] == [0]
    assert batch.rejected == [(NEXT, Rejected("empty message"))]


def test_copy_text_carries_the_record_index_after_the_offset() -> None:
    batch = Batch()
    batch.add(MSG, [_rec(0), _rec(7, "web")], generation=3)
    lines = raw_events_copy(batch).decode().splitlines()
    fields = [line.split("\t")[:5] for line in lines]
    assert fields == [["otlp_logs", "2", "41", "0", "3"], ["otlp_logs", "2", "41", "7", "3"]]
    assert raw_events_row(MSG, _rec(7), 3)[:5] == ("otlp_logs", 2, 41, 7, 3)


def test_each_kind_reads_the_rtmh_topic_by_default() -> None:
    settings = load_settings(topic_prefix="t1.")
    assert settings.topic_kinds() == {
        "t1.logs": "logs",
        "t1.metrics": "metrics",
        "t1.events": "events",
    }


def test_user_topic_lists_replace_the_default_per_kind() -> None:
    settings = load_settings(log_topics=" rtmh.logs, otlp_logs ,", metric_topics="otlp_metrics")
    assert settings.topics_for("logs") == ["rtmh.logs", "otlp_logs"]
    assert settings.topics_for("metrics") == ["otlp_metrics"]
    assert settings.topics_for("events") == ["rtmh.events"]
    assert settings.to_env()["RTMH_LOG_TOPICS"] == "rtmh.logs,otlp_logs"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"log_topics": "shared", "event_topics": "shared"},
            "invalid settings: topic 'shared' is mapped to both logs and events",
        ),
        ({"metric_topics": "ok,bad topic"}, "invalid setting RTMH_METRIC_TOPICS="),
        ({"log_topics": "x" * 250}, "is not a Kafka topic name"),
    ],
)
def test_bad_topic_lists_stop_at_start_naming_the_setting(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(**given)
