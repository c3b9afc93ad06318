"""rtmh.kafka.client.MessageReader.watermarks_many against an admin client that behaves as
librdkafka's does when one topic of a ListOffsets request is unknown: every partition of that
request fails (measured against the embedded broker; CI saw the known topic come back None)."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin._listoffsets import OffsetSpec  # admin/__init__ does not re-export it

from rtmh.kafka.client import MessageReader


class Offset:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class RequestWideFailures:
    """ListOffsets as librdkafka answers it: a request naming an unknown topic fails whole."""

    def __init__(self, logs: Mapping[tuple[str, int], tuple[int, int]]) -> None:
        self.logs = logs
        self.requests: list[list[tuple[str, int]]] = []

    def list_offsets(
        self, request: Mapping[TopicPartition, Any], **_: Any
    ) -> dict[TopicPartition, concurrent.futures.Future[Offset]]:
        parts = [(tp.topic, tp.partition) for tp in request]
        self.requests.append(parts)
        known = all(part in self.logs for part in parts)
        futures: dict[TopicPartition, concurrent.futures.Future[Offset]] = {}
        for tp, spec in request.items():
            future: concurrent.futures.Future[Offset] = concurrent.futures.Future()
            if known:
                low, high = self.logs[(tp.topic, tp.partition)]
                future.set_result(Offset(high if spec is OffsetSpec.latest() else low))
            else:
                future.set_exception(KafkaException(KafkaError(KafkaError._NOENT)))
            futures[tp] = future
        return futures


def test_an_unknown_topic_does_not_hide_the_watermarks_of_the_others() -> None:
    admin = RequestWideFailures({("logs", 0): (0, 7), ("logs", 1): (2, 9), ("events", 0): (0, 4)})
    reader = MessageReader("127.0.0.1:9", admin=admin)  # type: ignore[arg-type]
    try:
        marks = reader.watermarks_many([("logs", 0), ("gone", 0), ("logs", 1), ("events", 0)])
    finally:
        reader.close()
    assert marks == {
        ("logs", 0): (0, 7),
        ("logs", 1): (2, 9),
        ("events", 0): (0, 4),
        ("gone", 0): None,
    }
    # one request per topic and end, a topic's partitions together
    assert sorted(map(sorted, admin.requests)) == sorted(
        [[("events", 0)]] * 2 + [[("gone", 0)]] * 2 + [[("logs", 0), ("logs", 1)]] * 2
    )


def test_no_partitions_asks_nothing() -> None:
    admin = RequestWideFailures({})
    reader = MessageReader("127.0.0.1:9", admin=admin)  # type: ignore[arg-type]
    try:
        assert reader.watermarks_many([]) == {}
    finally:
        reader.close()
    assert admin.requests == []
