"""Typed rows that travel the data flow: a Kafka message in, a decoded record (or a rejection) out.

Every stage after the poll loop takes these objects, never confluent-kafka's ``Message``. The
contracts between the rules stage and the notifier (:class:`IncidentSnapshot`,
:class:`Notification`, severities, incident statuses, the global window key) are defined here
too, once, so that neither stage imports the other's internals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, get_args

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


class HistogramSample(msgspec.Struct, frozen=True):
    """Many observations summarised (an OTLP histogram data point, or the increment of a
    cumulative one): exact count and sum, and the buckets as (representative value, count) pairs
    that feed the window's quantile sketch. ``min`` / ``max`` are None when the point did not
    carry them (the window then takes the extreme buckets' values)."""

    name: str
    count: int
    sum: float | None
    min: float | None
    max: float | None
    buckets: tuple[tuple[float, int], ...] = ()


class CumulativeSample(msgspec.Struct, frozen=True):
    """A point of a cumulative series (an OTLP monotonic sum or cumulative histogram): the total
    since ``start_ns``. ``ingest.deltas`` turns it into the increment since the series' previous
    point (a MetricSample or HistogramSample) before the record reaches the windows; the windows
    skip any left unconverted."""

    name: str
    #: identifies the series across messages: resource, scope, metric name and point attributes
    series: str
    start_ns: int
    time_ns: int
    #: the running total of a sum; None for a histogram
    value: float | None = None
    #: the running totals of a histogram; None for a sum
    histogram: HistogramSample | None = None


Sample = MetricSample | HistogramSample | CumulativeSample


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
    samples: tuple[Sample, ...] = ()
    #: events only: deploy, restart, config_change, ...
    event_type: str | None = None
    #: e.g. ("ts_out_of_range",): stored, but left out of the windows
    flags: tuple[str, ...] = ()
    #: position in its Kafka message (raw_events.record_index): an OTLP message carries many
    index: int = 0

    @property
    def windowed(self) -> bool:
        return "ts_out_of_range" not in self.flags


class Rejected(msgspec.Struct, frozen=True):
    """A message (or one record of it) that cannot be stored as an event; it goes to dead_letters
    with this reason."""

    reason: str
    #: the refused record's position in its message; None when the whole message is refused
    index: int | None = None
    #: the bytes dead_letters keeps for a refused record: that record cut out as a message of its
    #: own when possible; None keeps the whole message's bytes
    payload: bytes | None = None


Decoded = DecodedRecord | Rejected
#: what one Kafka message decodes to: one result, or one per record (OTLP)
DecodedMessage = Decoded | list[Decoded]

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


# ------------------------------------------------------------------------------------------------
# Rules (stage 3) -> notify (stage 4): the incident and the notification about it
# ------------------------------------------------------------------------------------------------

#: window_key of the aggregate over every service (DESIGN "Sliding windows")
GLOBAL_WINDOW_KEY: Final = "__all__"
#: where a worker windows the records of services past its window-key budget (windows.cardinality)
OTHER_WINDOW_KEY: Final = "__other__"
#: the window keys no service owns: never budgeted or folded, selected by rules only by name
SYNTHETIC_WINDOW_KEYS: Final = frozenset({GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY})

Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = get_args(Severity)

#: the values of incidents.status (CHECK constraint in 001)
IncidentStatus = Literal["open", "investigating", "resolved", "closed"]
INCIDENT_STATUSES: Final[tuple[IncidentStatus, ...]] = get_args(IncidentStatus)
#: statuses covered by the partial unique index uq_incidents_live_fingerprint
LIVE_STATUSES: Final[frozenset[str]] = frozenset({"open", "investigating"})

NotificationEvent = Literal["open", "update", "repeat", "resolve", "test"]
NOTIFICATION_EVENTS: Final[tuple[NotificationEvent, ...]] = get_args(NotificationEvent)


@dataclass(frozen=True, slots=True)
class IncidentSnapshot:
    """The incident as it was when the notification was queued.

    ``to_dict()`` is the ``incident`` object of the webhook body and round-trips through
    ``from_dict()``: the rules stage stores it in ``alert_notifications.payload`` and the notifier
    reads it back, so a retried 'open' still describes the opening, even after the rule is renamed
    or deleted.
    """

    id: str
    title: str
    severity: Severity
    status: str
    source: str
    window_key: str | None
    rule_name: str | None
    first_seen: datetime
    last_seen: datetime
    last_value: float | None = None
    threshold: float | None = None
    condition: str | None = None
    peak_value: float | None = None
    resolved_at: datetime | None = None
    description: str | None = None
    runbook_url: str | None = None
    metric_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"incident severity must be one of {SEVERITIES}")

    @property
    def service(self) -> str:
        """The service for people: the window key, or a phrase for the global key."""
        if self.window_key is None or self.window_key == "":
            return "unknown service"
        if self.window_key == GLOBAL_WINDOW_KEY:
            return "all services"
        return self.window_key

    @property
    def rule(self) -> str:
        """The rule name, or the title when the rule is unknown (deleted before the snapshot)."""
        return self.rule_name or self.title

    @property
    def live(self) -> bool:
        """Whether the condition still held when the snapshot was taken (open, investigating)."""
        return self.status in LIVE_STATUSES

    @classmethod
    def from_rows(
        cls, incident: Mapping[str, Any], rule: Mapping[str, Any] | None = None
    ) -> IncidentSnapshot:
        """Build from an ``incidents`` row and its ``alert_rules`` row (None once deleted).

        Without a rule row, ``incident.metadata`` keys ``rule_name``, ``condition``,
        ``metric_type`` and ``runbook_url`` are used: incidents has no columns for them.
        """
        metadata: Mapping[str, Any] = incident.get("metadata") or {}
        known = rule if rule is not None else {}

        def from_rule(rule_key: str, metadata_key: str) -> Any:
            value = known.get(rule_key)
            return value if value is not None else metadata.get(metadata_key)

        return cls(
            id=str(incident["id"]),
            title=str(incident["title"]),
            severity=incident["severity"],
            status=str(incident["status"]),
            source=str(incident["source"]),
            window_key=incident.get("window_key"),
            rule_name=from_rule("name", "rule_name"),
            first_seen=as_utc(incident["first_seen"]),
            last_seen=as_utc(incident["last_seen"]),
            last_value=finite(incident.get("last_value")),
            threshold=finite(_first(incident.get("threshold"), known.get("threshold"))),
            condition=from_rule("condition", "condition"),
            peak_value=finite(incident.get("peak_value")),
            resolved_at=_optional_utc(incident.get("resolved_at")),
            description=_first(incident.get("description"), known.get("description")),
            runbook_url=from_rule("runbook_url", "runbook_url"),
            metric_type=from_rule("metric_type", "metric_type"),
            metadata=dict(metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the public names of the webhook schema (``service``, ``rule``)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "severity": self.severity,
            "status": self.status,
            "source": self.source,
            "service": self.window_key,
            "rule": self.rule_name,
            "metric_type": self.metric_type,
            "condition": self.condition,
            "threshold": finite(self.threshold),
            "last_value": finite(self.last_value),
            "peak_value": finite(self.peak_value),
            "first_seen": rfc3339(self.first_seen),
            "last_seen": rfc3339(self.last_seen),
            "resolved_at": rfc3339(self.resolved_at) if self.resolved_at else None,
            "runbook_url": self.runbook_url,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IncidentSnapshot:
        """Inverse of :meth:`to_dict`."""
        resolved = data.get("resolved_at")
        return cls(
            id=str(data["id"]),
            title=str(data["title"]),
            severity=data["severity"],
            status=str(data["status"]),
            source=str(data["source"]),
            window_key=data.get("service"),
            rule_name=data.get("rule"),
            first_seen=_parse_time(data["first_seen"]),
            last_seen=_parse_time(data["last_seen"]),
            last_value=finite(data.get("last_value")),
            threshold=finite(data.get("threshold")),
            condition=data.get("condition"),
            peak_value=finite(data.get("peak_value")),
            resolved_at=_parse_time(resolved) if resolved else None,
            description=data.get("description"),
            runbook_url=data.get("runbook_url"),
            metric_type=data.get("metric_type"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification to one channel: an ``alert_notifications`` row plus its incident."""

    id: int
    idempotency_key: str
    event: NotificationEvent
    #: the attempt being made, 1 for the first
    attempt: int
    incident: IncidentSnapshot
    #: link to this incident on the dashboard, when the hub knows its public URL
    dashboard_url: str | None = None

    def __post_init__(self) -> None:
        if self.event not in NOTIFICATION_EVENTS:
            raise ValueError(f"notification event must be one of {NOTIFICATION_EVENTS}")
        if self.attempt < 1:
            raise ValueError("notification attempt numbers start at 1")
        if not self.idempotency_key:
            raise ValueError("notification idempotency_key must not be empty")

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        incident: IncidentSnapshot,
        *,
        attempt: int,
        dashboard_url: str | None = None,
    ) -> Notification:
        """Build from an ``alert_notifications`` row (id, idempotency_key, event)."""
        return cls(
            id=int(row["id"]),
            idempotency_key=str(row["idempotency_key"]),
            event=row["event"],
            attempt=attempt,
            incident=incident,
            dashboard_url=dashboard_url,
        )

    @classmethod
    def test(
        cls,
        idempotency_key: str,
        *,
        now: datetime,
        notification_id: int = 0,
        attempt: int = 1,
        dashboard_url: str | None = None,
    ) -> Notification:
        """A 'test' notification (``incident_id`` is NULL): a made-up low-severity incident."""
        incident = IncidentSnapshot(
            id="00000000-0000-0000-0000-000000000000",
            title="RTMH test notification",
            severity="low",
            status="open",
            source="rtmh",
            window_key="rtmh",
            rule_name="rtmh_test",
            first_seen=as_utc(now),
            last_seen=as_utc(now),
            description="A test sent by RTMH to check this channel. No action is needed.",
        )
        return cls(notification_id, idempotency_key, "test", attempt, incident, dashboard_url)


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: what Alertmanager and PagerDuty both accept."""
    return as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_utc(moment: datetime) -> datetime:
    """Aware UTC. Postgres timestamptz arrives aware; a naive value can only have meant UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def finite(value: Any) -> float | None:
    """A float, or None for None/NaN/Infinity: JSON has none of them and no receiver can act
    on them."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


def _parse_time(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def value_vs_threshold(
    value: str, condition: str | None, threshold: str | None, *, live: bool
) -> str:
    """How an incident's value reads next to its rule, from numbers each surface formatted.

    While the condition holds: ``0.1234 > 0.05``. Once it no longer does (resolved, closed):
    ``recovered: 0.01, threshold > 0.05``, never ``0.01 > 0.05``, which reads as if it still held.
    """
    if threshold is None:
        return value if live else f"recovered: {value}"
    if live:
        rule = f"{condition} {threshold}" if condition else f"(threshold {threshold})"
        return f"{value} {rule}"
    limit = f"{condition} {threshold}" if condition else threshold
    return f"recovered: {value}, threshold {limit}"
