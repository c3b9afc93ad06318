"""The soak's traffic: bench detect's burst traffic (`rtmh simulate`'s generator), with a
sequence number in every good message and a malformed message now and then, each with a marker,
so the end can say which message is missing, doubled or not dead-lettered."""

from __future__ import annotations

import threading
from typing import Any

from rtmh.bench.detect.traffic import BurstTraffic
from rtmh.kafka.client import produce_waiting

SEQ_FIELD = "soak_seq"
BAD_MARKER = "soak-bad-"


def with_sequence(value: bytes, seq: int) -> bytes:
    """The JSON object ``value`` with ``"soak_seq": seq`` added (spliced: the generator's
    objects are compact and end with ``}``; the hub stores the text as received)."""
    if not value.endswith(b"}") or value == b"{}":
        raise ValueError(f"not a non-empty JSON object: {value[:80]!r}")
    return value[:-1] + b',"%s":%d}' % (SEQ_FIELD.encode(), seq)


def malformed(n: int) -> bytes:
    """A message no decoder accepts (JSON cut short), carrying its marker."""
    return b'{"service":"soak","msg":"%s%d","level":' % (BAD_MARKER.encode(), n)


class SoakTraffic(BurstTraffic):
    """Every good message numbered 0, 1, 2...; after every ``bad_every`` good ones a malformed
    one. Delivery reports say which the broker refused (none, normally)."""

    def __init__(self, *args: Any, bad_every: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bad_every = bad_every
        self.good = 0
        self.bad = 0
        self._lock = threading.Lock()
        self.failed_good: set[int] = set()
        self.failed_bad: set[int] = set()

    def _produce(self, kind: str, key: bytes, value: bytes) -> None:
        seq = self.good
        self.good += 1
        produce_waiting(
            self.producer,
            self.topics[kind],
            with_sequence(value, seq),
            key,
            lambda err, _msg: self._report(err, seq, self.failed_good),
        )
        self.produced += 1
        if self.good % self.bad_every == 0:
            n = self.bad
            self.bad += 1
            produce_waiting(
                self.producer,
                self.topics["logs"],
                malformed(n),
                key,
                lambda err, _msg: self._report(err, n, self.failed_bad),
            )
            self.produced += 1

    def _report(self, err: Any, n: int, failed: set[int]) -> None:
        self._on_delivery(err, None)
        if err is not None:
            with self._lock:
                failed.add(n)
