"""Stage 1 hot path: turn one Kafka message into a typed ``DecodedRecord`` or a ``Rejected``.

Pure: no I/O, no logging, and bad input never raises; every bad message becomes a ``Rejected``
whose short reason goes to dead_letters. Besides our own shapes it accepts the common shippers'
(Fluent Bit, Vector, ECS loggers, Telegraf), see DESIGN.md "Topics and message shapes".
``DecodedRecord.data`` is the text exactly as received; only the normalised columns are derived.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime
from typing import Any, Final, Generic, TypeVar, cast

import msgspec

from rtmh.records import Decoded, DecodedRecord, KafkaMessage, Kind, MetricSample, Rejected

__all__ = ["decode", "kind_for_topic"]

#: identifiers end up in btree-indexed columns (window_key, metric_type), keep them short
MAX_NAME_LEN: Final = 200
DEFAULT_MAX_PAST_S: Final = 7 * 86400 * 52
DEFAULT_MAX_FUTURE_S: Final = 3600.0

_TS_OUT_OF_RANGE: Final = ("ts_out_of_range",)
_LEVEL_UNRECOGNISED: Final = "level_unrecognised"
_REASON_VALUE_LEN: Final = 64


# --- message shapes ---------------------------------------------------------------------------
# Structs rather than a plain dict: msgspec skips unknown keys (payloads, labels, the message
# text) without building them. Measured on a 208-byte log line: dict 289 ns, 16-key struct 240 ns.
# Values stay ``Any`` so the checks below can name the field and both types; only the timestamp
# keys get a typed "fast" variant (see _Decoders).


class _Shape(msgspec.Struct, gc=False):
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


class _LogShape(_Shape, gc=False):
    level: Any = None
    log_level: Any = msgspec.field(default=None, name="log.level")
    #: Fluent Bit puts the line here (a string), ECS nests ``{"level": ...}`` here
    log: Any = None
    severity: Any = None
    severity_text: Any = None
    lvl: Any = None


class _MetricShape(_Shape, gc=False):
    name: Any = None
    value: Any = None
    #: Telegraf: ``{"name", "fields": {...}, "tags": {...}, "timestamp"}``
    fields: Any = None
    tags: Any = None


class _EventShape(_Shape, gc=False):
    type: Any = None


_S = TypeVar("_S", bound=_Shape)
_TS_KEYS: Final = (
    ("ts", "ts"),
    ("at_timestamp", "@timestamp"),
    ("timestamp", "timestamp"),
    ("time", "time"),
)
_TYPED_TS: Final[Any] = datetime | float | None


class _Decoders(Generic[_S]):
    """A fast decoder that parses RFC 3339 / epoch numbers in C, and a lax one for the rest.

    Typing the timestamp keys saves ~250 ns a message (msgspec.convert plus the Python around it,
    measured). Anything the fast one refuses (numeric strings, junk) is decoded again by the lax
    one, so the Python checks choose the key by priority and word the reason.
    """

    def __init__(self, shape: type[_S]) -> None:
        typed = [(attr, _TYPED_TS, msgspec.field(default=None, name=key)) for attr, key in _TS_KEYS]
        fast = msgspec.defstruct(f"_Fast{shape.__name__}", typed, bases=(shape,), gc=False)
        self.fast = msgspec.json.Decoder(cast(type[_S], fast))
        self.lax = msgspec.json.Decoder(shape)


_LOG_DECODERS: Final = _Decoders(_LogShape)
_METRIC_DECODERS: Final = _Decoders(_MetricShape)
_EVENT_DECODERS: Final = _Decoders(_EventShape)


# --- public API -------------------------------------------------------------------------------

_KINDS: Final = {kind.value: kind for kind in Kind}


def kind_for_topic(topic: str, prefix: str) -> Kind | None:
    """The kind a topic carries (``<prefix>logs`` -> ``Kind.LOGS``), None for foreign topics."""
    if not topic.startswith(prefix):
        return None
    return _KINDS.get(topic[len(prefix) :])


def decode(
    msg: KafkaMessage,
    kind: Kind,
    *,
    max_bytes: int = 1_048_576,
    now: float | None = None,
    max_past_s: float = DEFAULT_MAX_PAST_S,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
) -> Decoded:
    """Validate and normalise one message; never raises on bad input.

    A timestamp further than ``max_past_s`` / ``max_future_s`` from ``now`` is not rejected: the
    record gets the broker time (or ``now``) and the ``ts_out_of_range`` flag, so it is stored
    but kept out of the windows.
    """
    raw = msg.value
    if raw is None:
        return Rejected("tombstone: message value is null")
    text = _check_bytes(raw, max_bytes)
    if isinstance(text, Rejected):
        return text
    clock = _Clock(msg, time.time() if now is None else now, max_past_s, max_future_s)
    if kind == Kind.LOGS:
        log = _parse(_LOG_DECODERS, raw, text)
        return log if isinstance(log, Rejected) else _build_log(log, text, clock)
    if kind == Kind.METRICS:
        metric = _parse(_METRIC_DECODERS, raw, text)
        return metric if isinstance(metric, Rejected) else _build_metric(metric, text, clock)
    if kind == Kind.EVENTS:
        event = _parse(_EVENT_DECODERS, raw, text)
        return event if isinstance(event, Rejected) else _build_event(event, text, clock)
    raise ValueError(f"unknown kind {kind!r}")  # a caller bug, not bad input


# --- bytes and JSON ---------------------------------------------------------------------------

# a \u0000 escape preceded by an even number of backslashes (an odd run escapes the backslash)
_NUL_ESCAPE_RE: Final = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_BARE_NON_FINITE_RE: Final = re.compile(r"[:\[,]\s*-?(?:nan|inf(?:inity)?)\s*[,\]}]", re.I)
_NOT_OBJECT_RE: Final = re.compile(r"Expected `object`, got `(\w+)`$")
_MSGSPEC_TYPES: Final = {"str": "string", "int": "number", "float": "number", "bool": "boolean"}


def _check_bytes(raw: bytes, max_bytes: int) -> str | Rejected:
    """The UTF-8 text, or why these bytes can never be a stored event."""
    size = len(raw)
    if size == 0:
        return Rejected("empty message")
    if size > max_bytes:
        return Rejected(f"message is {size} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(f"not valid UTF-8 at byte {exc.start}")
    # PostgreSQL text and jsonb cannot hold NUL; the str search measured faster than on bytes
    if "\x00" in text:
        return Rejected(f"raw NUL byte at character {text.index(chr(0))}")
    if "\\u0000" in text and _NUL_ESCAPE_RE.search(text):
        return Rejected("contains a \\u0000 escape, which PostgreSQL jsonb rejects")
    return text


def _parse(decoders: _Decoders[_S], raw: bytes, text: str) -> _S | Rejected:
    try:
        return decoders.fast.decode(raw)
    except msgspec.ValidationError:
        pass  # the lax pass accepts numeric-string timestamps, or words the reason
    except (msgspec.DecodeError, RecursionError) as exc:
        return Rejected(_syntax_reason(text, exc))
    try:
        return decoders.lax.decode(raw)
    except msgspec.ValidationError as exc:
        return Rejected(_validation_reason(str(exc)))
    except (msgspec.DecodeError, RecursionError) as exc:
        return Rejected(_syntax_reason(text, exc))


def _syntax_reason(text: str, exc: msgspec.DecodeError | RecursionError) -> str:
    if isinstance(exc, RecursionError):
        # msgspec's depth guard is Python's recursion limit (~1000 levels); an exact 64-level
        # pre-scan measured ~300 ns on a 200-byte line (over 10% of a decode), so this is the limit
        return "JSON nested too deeply"
    if _BARE_NON_FINITE_RE.search(text):
        return f"not valid JSON (bare NaN/Infinity token; JSON has no such numbers): {exc}"
    return f"not valid JSON: {exc}"


def _validation_reason(error: str) -> str:
    not_object = _NOT_OBJECT_RE.match(error)
    if not_object:
        got = not_object.group(1)
        return f"JSON is {_MSGSPEC_TYPES.get(got, got)}, not an object"
    if error.startswith(("Number out of range", "Integer value out of range")):
        _, _, where = error.partition(" - ")  # e.g. "at `$.value`"
        return f"number out of float range - {where}"
    return f"invalid JSON value: {error}"


# --- field checks -----------------------------------------------------------------------------

_JSON_TYPES: Final[dict[type, str]] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
    type(None): "null",
}


def _wrong_type(field: str, expected: str, value: object) -> Rejected:
    got = _JSON_TYPES.get(type(value), type(value).__name__)
    return Rejected(f"field '{field}': expected {expected}, got {got}")


def _name(field: str, value: object) -> str | Rejected:
    """A required identifier: present, a string, non-empty after stripping, not too long."""
    if value is None:
        return Rejected(f"missing required field '{field}'")
    if not isinstance(value, str):
        return _wrong_type(field, "string", value)
    name = value.strip()
    if not name:
        return Rejected(f"field '{field}' is empty")
    if len(name) > MAX_NAME_LEN:
        return Rejected(f"field '{field}' is {len(name)} characters, over the {MAX_NAME_LEN} limit")
    return name


def _service(shape: _Shape) -> str | Rejected:
    service = shape.service
    if type(service) is str:  # the common case, without a call
        name = service.strip()
        if 0 < len(name) <= MAX_NAME_LEN:
            return name
    if isinstance(service, dict):  # ECS nests it: {"service": {"name": ...}}
        return _name("service.name", service.get("name"))
    if service is not None:
        return _name("service", service)
    if shape.service_name is not None:
        return _name("service.name", shape.service_name)
    if shape.app is not None:
        return _name("app", shape.app)
    return Rejected("missing required field 'service'")


def _host(shape: _Shape) -> str | Rejected | None:
    host = shape.host
    if type(host) is str:
        return host.strip() or None
    if isinstance(host, dict):  # ECS nests it: {"host": {"name": ...}}
        return _optional_text("host.name", host.get("name"))
    if host is not None:
        return _optional_text("host", host)
    if shape.host_name is not None:
        return _optional_text("host.name", shape.host_name)
    return _optional_text("hostname", shape.hostname)


def _optional_text(field: str, value: object) -> str | Rejected | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return _wrong_type(field, "string", value)
    return value.strip() or None


def _as_float(field: str, value: object) -> float | Rejected:
    """A JSON number as a finite float; bools are not numbers here."""
    if type(value) is float:  # msgspec never yields NaN/inf for JSON input
        return value
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return Rejected(f"field '{field}': number out of float range")
    return _wrong_type(field, "number", value)


#: window sums of values beyond this could overflow float8 in PostgreSQL's additive merge
#: (1.8e8 samples of 1e300 per window still sum finitely); no real gauge comes near it
MAX_METRIC_MAGNITUDE: Final = 1e300


def _metric_value(field: str, value: object) -> float | Rejected:
    number = _as_float(field, value)
    if isinstance(number, float) and abs(number) > MAX_METRIC_MAGNITUDE:
        return Rejected(
            f"field '{field}': {number:g} is beyond the ±1e300 a window can sum without overflow"
        )
    return number


# --- timestamps -------------------------------------------------------------------------------


class _Clock(msgspec.Struct, gc=False):
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
        return self.now, _TS_OUT_OF_RANGE

    def event_time(self, shape: _Shape) -> tuple[float, tuple[str, ...]] | Rejected:
        """Rounded to the microsecond, as raw_events stores it: x.9999996 must land in the same
        window whether it is windowed now or recomputed from the stored row."""
        when = self._event_time(shape)
        return when if isinstance(when, Rejected) else (round(when[0], 6), when[1])

    def _event_time(self, shape: _Shape) -> tuple[float, tuple[str, ...]] | Rejected:
        if shape.ts is not None:
            ts = _seconds("ts", shape.ts)
        elif shape.at_timestamp is not None:
            ts = _seconds("@timestamp", shape.at_timestamp)
        elif shape.timestamp is not None:
            ts = _seconds("timestamp", shape.timestamp)
        elif shape.time is not None:
            ts = _seconds("time", shape.time)
        else:
            return self.fallback()
        if isinstance(ts, Rejected):
            return ts
        if self.now - self.max_past_s <= ts <= self.now + self.max_future_s:
            return ts, ()
        return self.fallback()[0], _TS_OUT_OF_RANGE


def _seconds(field: str, value: object) -> float | Rejected:
    """Epoch seconds from a timestamp value as decoded by the fast or the lax decoder."""
    if type(value) is datetime:
        if value.tzinfo is None:  # RFC 3339 requires an offset; producers that omit it mean UTC
            value = value.replace(tzinfo=UTC)
        return value.timestamp()
    if type(value) is float:
        return _epoch_seconds(value)
    if isinstance(value, str):
        return _parse_ts_text(field, value)
    if type(value) is int:
        number = _as_float(field, value)
        return number if isinstance(number, Rejected) else _epoch_seconds(number)
    return _wrong_type(field, "RFC 3339 string or epoch number", value)


def _parse_ts_text(field: str, text: str) -> float | Rejected:
    if len(text) >= 10 and text[4] == "-":
        try:
            # strict RFC 3339: Z or offset, up to 9 fractional digits, T or space
            return _seconds(field, msgspec.convert(text, datetime))
        except msgspec.ValidationError:
            return _bad_ts(field, text)
    try:
        number = float(text)
    except ValueError:
        return _bad_ts(field, text)
    return _epoch_seconds(number) if math.isfinite(number) else _bad_ts(field, text)


def _bad_ts(field: str, text: str) -> Rejected:
    shown = text if len(text) <= _REASON_VALUE_LEN else text[:_REASON_VALUE_LEN] + "..."
    return Rejected(f"field '{field}': unparseable timestamp {shown!r}")


def _epoch_seconds(number: float) -> float:
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

_LEVEL_ALIASES: Final = {
    "trace": ("trace", "trc", "verbose", "vrb", "finest", "finer", "t"),
    "debug": ("debug", "dbg", "fine", "d"),
    "info": ("info", "inf", "information", "informational", "notice", "i"),
    "warn": ("warn", "warning", "wrn", "w"),
    "error": ("error", "err", "eror", "e"),
    "fatal": ("fatal", "ftl", "critical", "crit", "alert", "emerg", "emergency", "panic", "f"),
}
# Exact spellings first so the common cases skip .strip().lower().
_LEVELS: Final = {
    spelling: level
    for level, aliases in _LEVEL_ALIASES.items()
    for alias in aliases
    for spelling in (alias, alias.upper(), alias.capitalize())
}
#: syslog severities 0..7
_SYSLOG_LEVELS: Final = ("fatal", "fatal", "fatal", "error", "warn", "info", "info", "debug")
#: bunyan/pino 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal (custom ones in between)
_TENS_LEVELS: Final = ("trace", "debug", "info", "warn", "error", "fatal")
_ERROR_LEVELS: Final = frozenset(("error", "fatal"))


def _raw_level(shape: _LogShape) -> tuple[str, object] | None:
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


def _normalise_level(field: str, value: object) -> str | Rejected | None:
    """One of trace/debug/info/warn/error/fatal; None when the spelling is unknown."""
    if isinstance(value, str):
        level = _LEVELS.get(value)
        if level is not None:
            return level
        folded = value.strip().lower()
        if folded.isdigit() and folded.isascii():
            return _numeric_level(int(folded))
        return _LEVELS.get(folded)
    if type(value) is int:
        return _numeric_level(value)
    if type(value) is float and value.is_integer():
        return _numeric_level(int(value))
    return _wrong_type(field, "string or integer", value)


def _numeric_level(number: int) -> str | None:
    if 0 <= number <= 7:
        return _SYSLOG_LEVELS[number]
    if 10 <= number < 70:
        return _TENS_LEVELS[number // 10 - 1]
    return None


# --- records ----------------------------------------------------------------------------------


def _build_log(shape: _LogShape, text: str, clock: _Clock) -> Decoded:
    service = _service(shape)
    if isinstance(service, Rejected):
        return service
    host = _host(shape)
    if isinstance(host, Rejected):
        return host
    when = clock.event_time(shape)
    if isinstance(when, Rejected):
        return when
    event_time, flags = when
    level = _LEVELS.get(shape.level) if type(shape.level) is str else None
    if level is None and (found := _raw_level(shape)) is not None:
        normalised = _normalise_level(*found)
        if isinstance(normalised, Rejected):
            return normalised
        if normalised is None:
            flags = (*flags, _LEVEL_UNRECOGNISED)
        level = normalised
    return DecodedRecord(
        kind=Kind.LOGS,
        data=text,
        event_time=event_time,
        service=service,
        host=host,
        level=level,
        is_error=level in _ERROR_LEVELS,
        flags=flags,
    )


_MetricParts = tuple[str, str | None, tuple[MetricSample, ...]]


def _build_metric(shape: _MetricShape, text: str, clock: _Clock) -> Decoded:
    parts = _plain_parts(shape) if shape.fields is None else _telegraf_parts(shape)
    if isinstance(parts, Rejected):
        return parts
    when = clock.event_time(shape)
    if isinstance(when, Rejected):
        return when
    service, host, samples = parts
    return DecodedRecord(
        kind=Kind.METRICS,
        data=text,
        event_time=when[0],
        service=service,
        host=host,
        samples=samples,
        flags=when[1],
    )


def _plain_parts(shape: _MetricShape) -> _MetricParts | Rejected:
    service = _service(shape)
    if isinstance(service, Rejected):
        return service
    host = _host(shape)
    if isinstance(host, Rejected):
        return host
    samples = _plain_samples(shape)
    if isinstance(samples, Rejected):
        return samples
    return service, host, samples


def _telegraf_parts(shape: _MetricShape) -> _MetricParts | Rejected:
    tags = _telegraf_tags(shape)
    if isinstance(tags, Rejected):
        return tags
    service = _telegraf_service(shape, tags)
    if isinstance(service, Rejected):
        return service
    host = _optional_text("tags.host", tags["host"]) if "host" in tags else _host(shape)
    if isinstance(host, Rejected):
        return host
    samples = _telegraf_samples(shape)
    if isinstance(samples, Rejected):
        return samples
    return service, host, samples


def _plain_samples(shape: _MetricShape) -> tuple[MetricSample, ...] | Rejected:
    name = _name("name", shape.name)
    if isinstance(name, Rejected):
        return name
    if shape.value is None:
        return Rejected("missing required field 'value'")
    value = _metric_value("value", shape.value)
    if isinstance(value, Rejected):
        return value
    return (MetricSample(name, value),)


def _telegraf_tags(shape: _MetricShape) -> dict[str, Any] | Rejected:
    if shape.tags is None:
        return {}
    if not isinstance(shape.tags, dict):
        return _wrong_type("tags", "object", shape.tags)
    return shape.tags


def _telegraf_service(shape: _MetricShape, tags: dict[str, Any]) -> str | Rejected:
    if tags.get("service") is not None:
        return _name("tags.service", tags["service"])
    if tags.get("app") is not None:
        return _name("tags.app", tags["app"])
    return _service(shape)


def _telegraf_samples(shape: _MetricShape) -> tuple[MetricSample, ...] | Rejected:
    measurement = _name("name", shape.name)
    if isinstance(measurement, Rejected):
        return measurement
    if not isinstance(shape.fields, dict):
        return _wrong_type("fields", "object", shape.fields)
    samples: list[MetricSample] = []
    for field, raw in shape.fields.items():
        if type(raw) is bool:  # Telegraf's boolean fields (e.g. "up") count as 1/0
            value: float | Rejected = 1.0 if raw else 0.0
        elif type(raw) is int or type(raw) is float:
            value = _metric_value(f"fields.{field}", raw)
        else:
            continue  # string fields (e.g. status text) are not samples
        if isinstance(value, Rejected):
            return value
        name = _name(f"fields.{field}", f"{measurement}_{field}")
        if isinstance(name, Rejected):
            return name
        samples.append(MetricSample(name, value))
    if not samples:
        return Rejected("Telegraf metric has no numeric field in 'fields'")
    return tuple(samples)


def _build_event(shape: _EventShape, text: str, clock: _Clock) -> Decoded:
    service = _service(shape)
    if isinstance(service, Rejected):
        return service
    event_type = _name("type", shape.type)
    if isinstance(event_type, Rejected):
        return event_type
    host = _host(shape)
    if isinstance(host, Rejected):
        return host
    when = clock.event_time(shape)
    if isinstance(when, Rejected):
        return when
    return DecodedRecord(
        kind=Kind.EVENTS,
        data=text,
        event_time=when[0],
        service=service,
        host=host,
        event_type=event_type,
        flags=when[1],
    )
