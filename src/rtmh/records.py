"""Typed rows that travel the data flow: a Kafka message in, a decoded record (or a rejection) out.

Every stage after the poll loop takes these objects, never confluent-kafka's ``Message``.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class Kind(StrEnum):
    """What a topic carries; the topic name is ``<prefix><kind>``."""

    LOGS = "logs"
    METRICS = "metrics"
    EVENTS = "events"


class KafkaMessage(msgspec.Struct, frozen=True):
    """One message as it came off the broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: broker/producer timestamp in epoch milliseconds, None when the broker gave none
    timestamp_ms: int | None


class MetricSample(msgspec.Struct, frozen=True):
    """One numeric observation; a Telegraf message with several fields yields several."""

    name: str
    value: float


class DecodedRecord(msgspec.Struct, frozen=True):
    """A message that passed validation, ready for raw_events and the windows."""

    kind: Kind
    #: the message text exactly as received (stored in raw_events.data)
    data: str
    #: event time in epoch seconds (from the message, or the broker timestamp when it had none)
    event_time: float
    service: str
    host: str | None = None
    #: normalised lower-case level for logs: trace/debug/info/warn/error/fatal
    level: str | None = None
    is_error: bool = False
    samples: tuple[MetricSample, ...] = ()
    #: events only: deploy, restart, config_change, ...
    event_type: str | None = None
    #: e.g. ("ts_out_of_range",): stored, but left out of the windows
    flags: tuple[str, ...] = ()

    @property
    def windowed(self) -> bool:
        return "ts_out_of_range" not in self.flags


class Rejected(msgspec.Struct, frozen=True):
    """A message that cannot be stored as an event; it goes to dead_letters with this reason."""

    reason: str


Decoded = DecodedRecord | Rejected

#: one sliding window of one series: (window_key, metric_type, window_start epoch seconds). The
#: windows stage returns the keys a batch touched; the rules stage evaluates those.
WindowKey = tuple[str, str, int]


class ReadOutcome(StrEnum):
    """What reading one offset back from the broker found."""

    FOUND = "found"  # the message at that offset
    LATER = "later"  # no message there but a later one: a gap (compaction, transaction markers)
    MISSING = "missing"  # the broker says its log does not hold that offset
    UNKNOWN = "unknown"  # no answer (an error, a timeout): ask again, conclude nothing


class ReadBack(msgspec.Struct, frozen=True):
    """The answer to reading one offset back; ``message`` is the one found (FOUND, LATER)."""

    outcome: ReadOutcome
    message: KafkaMessage | None = None
    detail: str = ""
