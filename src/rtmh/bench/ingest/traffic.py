"""`rtmh bench ingest`, the workload: realistic messages from ``rtmh.simulate.Traffic`` (native
JSON, one record a message) or ``rtmh.otlp_traffic.OtlpTraffic`` (the same traffic as OTLP export
requests, many records a message), produced to fresh topics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from rtmh.otlp_traffic import Format, OtlpTraffic
from rtmh.simulate import Traffic, scenario

#: messages per second of event time in the generated traffic (windows per batch depend on it)
EVENT_RATE = 5_000.0


SEED = 20_240_601


Message = tuple[str, bytes, bytes]  # (kind, key, value)


Advance = Callable[[int], None]


def _steady(
    traffic: Traffic, span: float, rate: float, enough: Callable[[list[Message]], bool]
) -> list[Message]:
    """Ticks of ``traffic`` 0.1 s apart, event times ending now, until ``enough`` holds."""
    start = time.time() - span
    step = 0.1
    per_step = rate / 2 * step  # two messages per request
    out: list[Message] = []
    carry = 0.0
    t = 0.0
    while not enough(out):
        carry += per_step
        requests = int(carry)
        carry -= requests
        out.extend(traffic.batch(t, requests, now=start + t))
        t += step
    return out


def generate(events: int, *, rate: float = EVENT_RATE, seed: int = SEED) -> list[Message]:
    """``events`` messages of steady traffic whose event times end now."""
    span = events / rate
    traffic = Traffic(scenario("steady", span), seed=seed)
    return _steady(traffic, span, rate, lambda out: len(out) >= events)[:events]


@dataclass
class OtlpWorkload:
    """The OTLP form of the workload: its messages and the records they carry."""

    encoding: Format
    messages: list[Message]
    #: records per kind (raw_events rows once stored)
    records: dict[str, int]

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def generate_otlp(
    records: int, encoding: Format, *, rate: float = EVENT_RATE, seed: int = SEED
) -> OtlpWorkload:
    """Steady traffic of at least ``records`` records whose event times end now, as OTLP: the
    loop of ``generate`` (same seed, same 0.1 s ticks), so the same log lines and samples, each
    tick one request per service and kind. Whole messages: it stops at the first tick that
    reaches ``records``."""
    span = records / rate
    traffic = OtlpTraffic(scenario("steady", span), seed=seed, encoding=encoding)
    out = _steady(traffic, span, rate, lambda _out: sum(traffic.records.values()) >= records)
    return OtlpWorkload(encoding, out, dict(traffic.records))


@dataclass
class Produced:
    topics: dict[str, str]
    placed: list[tuple[int, int]]  # (partition, offset) of each message, in generation order
    seconds: float


def produce(
    bootstrap: str,
    topics: dict[str, str],
    partitions: int,
    messages: list[Message],
    advance: Advance,
) -> Produced:
    from confluent_kafka import KafkaError
    from confluent_kafka import Message as KMessage

    from rtmh.kafka.client import ensure_topics, make_producer, produce_waiting

    ensure_topics(bootstrap, list(topics.values()), partitions)
    producer = make_producer(bootstrap)
    placed: list[tuple[int, int]] = [(-1, -1)] * len(messages)
    failures: list[str] = []

    def delivered(i: int) -> Callable[[KafkaError | None, KMessage], None]:
        def callback(err: KafkaError | None, msg: KMessage) -> None:
            partition, offset = msg.partition(), msg.offset()
            if err is not None or partition is None or offset is None:
                failures.append(str(err))
            else:
                placed[i] = (partition, offset)

        return callback

    started = time.perf_counter()
    for i, (kind, key, value) in enumerate(messages):
        produce_waiting(producer, topics[kind], value, key, delivered(i))
        if i % 5000 == 4999:
            producer.poll(0)
            advance(5000)
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    advance(len(messages) % 5000)
    if left or failures:
        raise RuntimeError(
            f"producing the workload failed: {left} undelivered, {len(failures)} errors "
            f"({failures[0] if failures else 'timed out'})"
        )
    return Produced(topics, placed, seconds)


def generate_counted(n: int, advance: Advance) -> list[Message]:
    """``generate``, reporting the n messages to a progress bar."""
    out = generate(n)
    advance(n)
    return out
