"""The message shapes stage 1 accepts, and the rules for each field they carry.

Pure: no I/O. ``decode`` parses a message into one of these shapes and builds the record with the
field checks here; every check returns a value or a ``Rejected`` whose reason names the field.
Besides our own shapes the common shippers' are accepted (Fluent Bit, Vector, ECS loggers,
Telegraf), see DESIGN.md "Topics and message shapes".
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar, cast

import msgspec

from rtmh.ingest.kubernetes import host_of_pod, service_of_pod
from rtmh.records import KafkaMessage, Rejected

#: identifiers end up in btree-indexed columns (window_key, metric_type), keep them short
MAX_NAME_LEN: Final = 200
DEFAULT_MAX_PAST_S: Final = 7 * 86400 * 52
DEFAULT_MAX_FUTURE_S: Final = 3600.0

TS_OUT_OF_RANGE: Final = ("ts_out_of_range",)
LEVEL_UNRECOGNISED: Final = "level_unrecognised"
REASON_VALUE_LEN: Final = 64


# --- message shapes ---------------------------------------------------------------------------
# Structs rather than a plain dict: msgspec skips unknown keys (payloads, labels, the message
# text) without building them. Measured on a 208-byte log line: dict 289 ns, 16-key struct 240 ns.
# Values stay ``Any`` so the checks below can name the field and both types; only the timestamp
# keys get a typed "fast" variant (see Decoders).


class Shape(msgspec.Struct, gc=False):
    """Keys every kind may carry; JSON null counts as absent."""

    ts: Any = None
    at_timestamp: Any = msgspec.field(default=None, name="@timestamp")
    timestamp: Any = None
    time: Any = None
    service: Any = None
    service_name: Any = msgspec.field(default=None, name="service.name")
    app: Any = None
    host: Any = None
    host_name: Any = msgspec.field(default=None, name="host.name")
    hostname: Any = None
    #: a pod's metadata from Fluent Bit or Vector on Kubernetes (see ingest.kubernetes)
    kubernetes: Any = None


class LogShape(Shape, gc=False):
    level: Any = None
    log_level: Any = msgspec.field(default=None, name="log.level")
    #: Fluent Bit puts the line here (a string), ECS nests ``{"level": ...}`` here
    log: Any = None
    severity: Any = None
    severity_text: Any = None
    lvl: Any = None


class MetricShape(Shape, gc=False):
    name: Any = None
    value: Any = None
    #: Telegraf: ``{"name", "fields": {...}, "tags": {...}, "timestamp"}``
    fields: Any = None
    tags: Any = None


class EventShape(Shape, gc=False):
    type: Any = None
    #: "Event" for a Kubernetes Event object (see ingest.kubernetes)
    kind: Any = None


S = TypeVar("S", bound=Shape)
TS_KEYS: Final = (
    ("ts", "ts"),
    ("at_timestamp", "@timestamp"),
    ("timestamp", "timestamp"),
    ("time", "time"),
)
TYPED_TS: Final[Any] = datetime | float | None


class Decoders(Generic[S]):
    """A fast decoder that parses RFC 3339 / epoch numbers in C, and a lax one for the rest.

    Typing the timestamp keys saves ~250 ns a message (msgspec.convert plus the Python around it,
    measured). Anything the fast one refuses (numeric strings, junk) is decoded again by the lax
    one, so the Python checks choose the key by priority and word the reason.
    """

    def __init__(self, shape: type[S]) -> None:
        typed = [(attr, TYPED_TS, msgspec.field(default=None, name=key)) for attr, key in TS_KEYS]
        fast = msgspec.defstruct(f"_Fast{shape.__name__}", typed, bases=(shape,), gc=False)
        self.fast = msgspec.json.Decoder(cast(type[S], fast))
        self.lax = msgspec.json.Decoder(shape)


LOG_DECODERS: Final = Decoders(LogShape)
METRIC_DECODERS: Final = Decoders(MetricShape)
EVENT_DECODERS: Final = Decoders(EventShape)


# --- field checks -----------------------------------------------------------------------------

JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def wrong_type(field: str, expected: str, value: object) -> Rejected:
    got = JSON_TYPES.get(type(value), type(value).__name__)
    return Rejected(f"field '{field}': expected {expected}, got {got}")


def required_name(field: str, value: object) -> str | Rejected:
    """A required identifier: present, a string, non-empty after stripping, not too long."""
    if value is None:
        return Rejected(f"missing required field '{field}'")
    if not isinstance(value, str):
        return wrong_type(field, "string", value)
    name = value.strip()
    if not name:
        return Rejected(f"field '{field}' is empty")
    if len(name) > MAX_NAME_LEN:
        return Rejected(f"field '{field}' is {len(name)} characters, over the {MAX_NAME_LEN} limit")
    return name


def service_of(shape: Shape) -> str | Rejected:
    service = shape.service
    if type(service) is str:  # the common case, without a call
        name = service.strip()
        if 0 < len(name) <= MAX_NAME_LEN:
            return name
    if isinstance(service, dict):  # ECS nests it: {"service": {"name": ...}}
        return required_name("service.name", service.get("name"))
    if service is not None:
        return required_name("service", service)
    if shape.service_name is not None:
        return required_name("service.name", shape.service_name)
    if shape.app is not None:
        return required_name("app", shape.app)
    if shape.kubernetes is not None:
        pod_service = service_of_pod(shape.kubernetes)
        if pod_service is not None:
            return required_name("kubernetes", pod_service)
    return Rejected("missing required field 'service'")


def host_of(shape: Shape) -> str | Rejected | None:
    host = shape.host
    if type(host) is str:
        return host.strip() or None
    if isinstance(host, dict):  # ECS nests it: {"host": {"name": ...}}
        return optional_text("host.name", host.get("name"))
    if host is not None:
        return optional_text("host", host)
    if shape.host_name is not None:
        return optional_text("host.name", shape.host_name)
    if shape.hostname is None and shape.kubernetes is not None:
        return host_of_pod(shape.kubernetes)
    return optional_text("hostname", shape.hostname)


def optional_text(field: str, value: object) -> str | Rejected | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return wrong_type(field, "string", value)
    return value.strip() or None


def as_float(field: str, value: object) -> float | Rejected:
    """A JSON number as a finite float; bools are not numbers here."""
    if type(value) is float:  # msgspec never yields NaN/inf for JSON input
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return Rejected(f"field '{field}': number out of float range")
    return wrong_type(field, "number", value)


#: window sums of values beyond this could overflow float8 in PostgreSQL's additive merge
#: (1.8e8 samples of 1e300 per window still sum finitely); no real gauge comes near it
MAX_METRIC_MAGNITUDE: Final = 1e300


def metric_value(field: str, value: object) -> float | Rejected:
    number = as_float(field, value)
    if isinstance(number, float) and abs(number) > MAX_METRIC_MAGNITUDE:
        return Rejected(
            f"field '{field}': {number:g} is beyond the ±1e300 a window can sum without overflow"
        )
    return number


# --- timestamps -------------------------------------------------------------------------------


class Clock(msgspec.Struct, gc=False):
    """Everything event-time resolution needs besides the message body."""

    msg: KafkaMessage
    now: float
    max_past_s: float
    max_future_s: float

    def fallback(self) -> tuple[float, tuple[str, ...]]:
        """Broker time, else now: for a message without (a believable) timestamp. A producer may
        set any broker timestamp; one beyond the same bounds is not believed either (it used to
        reach the windows as, e.g., the year 146,140,482: found by the ingest fuzz test)."""
        broker_ms = self.msg.timestamp_ms
        if broker_ms is None or broker_ms <= 0:
            return self.now, ()
        broker = broker_ms / 1000.0
        if self.now - self.max_past_s <= broker <= self.now + self.max_future_s:
            return broker, ()
        return self.now, TS_OUT_OF_RANGE

    def event_time(self, shape: Shape) -> tuple[float, tuple[str, ...]] | Rejected:
        """Rounded to the microsecond, as raw_events stores it: x.9999996 must land in the same
        window whether it is windowed now or recomputed from the stored row."""
        when = self._event_time(shape)
        return when if isinstance(when, Rejected) else (round(when[0], 6), when[1])

    def _event_time(self, shape: Shape) -> tuple[float, tuple[str, ...]] | Rejected:
        if shape.ts is not None:
            return self.at("ts", shape.ts)
        if shape.at_timestamp is not None:
            return self.at("@timestamp", shape.at_timestamp)
        if shape.timestamp is not None:
            return self.at("timestamp", shape.timestamp)
        if shape.time is not None:
            return self.at("time", shape.time)
        return self.fallback()

    def at(self, field: str, value: object) -> tuple[float, tuple[str, ...]] | Rejected:
        """The time a field gives, if believable (else the fallback and the flag)."""
        ts = seconds(field, value)
        if isinstance(ts, Rejected):
            return ts
        if self.now - self.max_past_s <= ts <= self.now + self.max_future_s:
            return ts, ()
        return self.fallback()[0], TS_OUT_OF_RANGE


def seconds(field: str, value: object) -> float | Rejected:
    """Epoch seconds from a timestamp value as decoded by the fast or the lax decoder."""
    if type(value) is datetime:
        if value.tzinfo is None:  # RFC 3339 requires an offset; producers that omit it mean UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if type(value) is float:
        return epoch_seconds(value)
    if isinstance(value, str):
        return parse_ts_text(field, value)
    if type(value) is int:
        number = as_float(field, value)
        return number if isinstance(number, Rejected) else epoch_seconds(number)
    return wrong_type(field, "RFC 3339 string or epoch number", value)


def parse_ts_text(field: str, text: str) -> float | Rejected:
    if len(text) >= 10 and text[4] == "-":
        try:
            # strict RFC 3339: Z or offset, up to 9 fractional digits, T or space
            return seconds(field, msgspec.convert(text, datetime))
        except msgspec.ValidationError:
            return bad_ts(field, text)
    try:
        number = float(text)
    except ValueError:
        return bad_ts(field, text)
    return epoch_seconds(number) if math.isfinite(number) else bad_ts(field, text)


def bad_ts(field: str, text: str) -> Rejected:
    shown = text if len(text) <= REASON_VALUE_LEN else text[:REASON_VALUE_LEN] + "..."
    return Rejected(f"field '{field}': unparseable timestamp {shown!r}")


def epoch_seconds(number: float) -> float:
    """Seconds from epoch s/ms/us/ns, told apart by magnitude (each unit covers 1973..5138)."""
    size = abs(number)
    if size < 1e11:
        return number
    if size < 1e14:
        return number / 1e3
    if size < 1e17:
        return number / 1e6
    return number / 1e9


# --- levels -----------------------------------------------------------------------------------

LEVEL_ALIASES: Final = {
    "trace": ("trace", "trc", "verbose", "vrb", "finest", "finer", "t"),
    "debug": ("debug", "dbg", "fine", "d"),
    "info": ("info", "inf", "information", "informational", "notice", "i"),
    "warn": ("warn", "warning", "wrn", "w"),
    "error": ("error", "err", "eror", "e"),
    "fatal": ("fatal", "ftl", "critical", "crit", "alert", "emerg", "emergency", "panic", "f"),
}
# Exact spellings first so the common cases skip .strip().lower().
LEVELS: Final = {
    spelling: level
    for level, aliases in LEVEL_ALIASES.items()
    for alias in aliases
    for spelling in (alias, alias.upper(), alias.capitalize())
}
#: syslog severities 0..7
SYSLOG_LEVELS: Final = ("fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug")
#: bunyan/pino 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal (custom ones in between)
TENS_LEVELS: Final = ("trace", "debug", "info", "warn", "error", "fatal")
ERROR_LEVELS: Final = frozenset(("error", "fatal"))


def raw_level(shape: LogShape) -> tuple[str, object] | None:
    if shape.level is not None:
        return "level", shape.level
    if shape.log_level is not None:
        return "log.level", shape.log_level
    if isinstance(shape.log, dict) and shape.log.get("level") is not None:
        return "log.level", shape.log["level"]
    if shape.severity is not None:
        return "severity", shape.severity
    if shape.severity_text is not None:
        return "severity_text", shape.severity_text
    if shape.lvl is not None:
        return "lvl", shape.lvl
    return None


def normalise_level(field: str, value: object) -> str | Rejected | None:
    """One of trace/debug/info/warn/error/fatal; None when the spelling is unknown."""
    if isinstance(value, str):
        level = LEVELS.get(value)
        if level is not None:
            return level
        folded = value.strip().lower()
        if folded.isdigit() and folded.isascii():
            return numeric_level(int(folded))
        return LEVELS.get(folded)
    if type(value) is int:
        return numeric_level(value)
    if type(value) is float and value.is_integer():
        return numeric_level(int(value))
    return wrong_type(field, "string or integer", value)


def numeric_level(number: int) -> str | None:
    if 0 <= number <= 7:
        return SYSLOG_LEVELS[number]
    if 10 <= number < 70:
        return TENS_LEVELS[number // 10 - 1]
    return None
