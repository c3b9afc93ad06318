"""kafka.client.refresh_metadata: a consumer asks about each topic now, and a broker that does not
answer stops the asking without an error (the worker goes on; librdkafka's own scan follows)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

from rtmh.kafka.client import refresh_metadata


class AskingConsumer:
    def __init__(self, fail_on: str | None = None) -> None:
        self.asked: list[tuple[str, float]] = []
        self.fail_on = fail_on

    def list_topics(self, topic: str, timeout: float) -> object:
        self.asked.append((topic, timeout))
        if topic == self.fail_on:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "broker down"))
        return object()


def test_each_topic_is_asked_about_with_the_timeout() -> None:
    consumer = AskingConsumer()
    refresh_metadata(consumer, ["a.logs", "a.metrics"], timeout=0.5)  # type: ignore[arg-type]
    assert consumer.asked == [("a.logs", 0.5), ("a.metrics", 0.5)]


def test_a_broker_that_does_not_answer_ends_the_asking_quietly() -> None:
    consumer = AskingConsumer(fail_on="a.logs")
    refresh_metadata(consumer, ["a.logs", "a.metrics"])  # type: ignore[arg-type]
    assert [topic for topic, _ in consumer.asked] == ["a.logs"]
