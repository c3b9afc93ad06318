"""A fetch position the broker calls out of range is noted for a new start decision, never
skipped past or followed to the log start (issue 23, hole 1). Plain objects only: no broker."""

from __future__ import annotations

from confluent_kafka import KafkaError

from rtmh.config import load_settings
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import consumer_config


class ErrorEvent:
    """What consume() returns for a partition-level error."""

    def __init__(self, code: int, topic: str, partition: int) -> None:
        self._error = KafkaError(code)
        self._topic, self._partition = topic, partition

    def error(self) -> KafkaError:
        return self._error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition


def test_the_consumer_never_resets_a_position_by_itself() -> None:
    assert consumer_config("127.0.0.1:1", "g")["auto.offset.reset"] == "error"


def test_out_of_range_errors_are_noted_per_partition_and_nothing_is_taken() -> None:
    settings = load_settings(
        postgres_url="postgresql://nobody@127.0.0.1:1/x", kafka_bootstrap_servers="127.0.0.1:1"
    )
    worker = Worker(settings, settings.postgres_url, "127.0.0.1:1")
    events = [
        ErrorEvent(KafkaError._AUTO_OFFSET_RESET, "rtmh.logs", 2),
        ErrorEvent(KafkaError.OFFSET_OUT_OF_RANGE, "rtmh.events", 0),
        ErrorEvent(KafkaError._PARTITION_EOF, "rtmh.metrics", 1),
        ErrorEvent(KafkaError._TRANSPORT, "rtmh.metrics", 3),
    ]
    worker._take(events)  # type: ignore[arg-type]
    assert worker._out_of_range == {("rtmh.logs", 2), ("rtmh.events", 0)}
    assert len(worker.checkpoints.batch) == 0
