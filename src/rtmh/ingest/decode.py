"""Stage 1 hot path: turn one Kafka message into a typed ``DecodedRecord`` or a ``Rejected``.

Pure: no I/O, no logging, and bad input never raises; every bad message becomes a ``Rejected``
whose short reason goes to dead_letters. Besides our own shapes it accepts the common shippers'
(Fluent Bit, Vector, ECS loggers, Telegraf), see DESIGN.md "Topics and message shapes".
``DecodedRecord.data`` is the text exactly as received; only the normalised columns are derived.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final

import msgspec

from rtmh.ingest import kubernetes as k8s
from rtmh.ingest.otlp import decode_otlp, may_be_otlp
from rtmh.ingest.shapes import (
    DEFAULT_MAX_FUTURE_S,
    DEFAULT_MAX_PAST_S,
    ERROR_LEVELS,
    EVENT_DECODERS,
    LEVEL_UNRECOGNISED,
    LEVELS,
    LOG_DECODERS,
    METRIC_DECODERS,
    Clock,
    Decoders,
    EventShape,
    LogShape,
    MetricShape,
    S,
    host_of,
    metric_value,
    normalise_level,
    optional_text,
    raw_level,
    required_name,
    service_of,
    wrong_type,
)
from rtmh.records import (
    Decoded,
    DecodedMessage,
    DecodedRecord,
    KafkaMessage,
    Kind,
    MetricSample,
    Rejected,
)

__all__ = ["decode", "decode_message", "kind_for_topic"]


# --- public API -------------------------------------------------------------------------------

_KINDS: Final = {kind.value: kind for kind in Kind}


def kind_for_topic(topic: str, prefix: str) -> Kind | None:
    """The kind a topic carries (``<prefix>logs`` -> ``Kind.LOGS``), None for foreign topics."""
    if not topic.startswith(prefix):
        return None
    return _KINDS.get(topic[len(prefix) :])


def decode_message(
    msg: KafkaMessage,
    kind: Kind,
    *,
    max_bytes: int = 1_048_576,
    now: float | None = None,
    max_past_s: float = DEFAULT_MAX_PAST_S,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
) -> DecodedMessage:
    """What one message holds: an OTLP request's records (one result each, in order), or the one
    record of a JSON message. OTLP is recognised by its first bytes, so JSON pays one check."""
    raw = msg.value
    if kind is not Kind.EVENTS and raw and may_be_otlp(raw):
        now = time.time() if now is None else now
        records = decode_otlp(
            msg,
            kind,
            max_bytes=max_bytes,
            now=now,
            max_past_s=max_past_s,
            max_future_s=max_future_s,
        )
        if records is not None:
            return records
    return decode(
        msg, kind, max_bytes=max_bytes, now=now, max_past_s=max_past_s, max_future_s=max_future_s
    )


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
    clock = Clock(msg, time.time() if now is None else now, max_past_s, max_future_s)
    if kind == Kind.LOGS:
        log = _parse(LOG_DECODERS, raw, text)
        return log if isinstance(log, Rejected) else _build_log(log, text, clock)
    if kind == Kind.METRICS:
        metric = _parse(METRIC_DECODERS, raw, text)
        return metric if isinstance(metric, Rejected) else _build_metric(metric, text, clock)
    if kind == Kind.EVENTS:
        event = _parse(EVENT_DECODERS, raw, text)
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


def _parse(decoders: Decoders[S], raw: bytes, text: str) -> S | Rejected:
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


# --- records ----------------------------------------------------------------------------------


def _build_log(shape: LogShape, text: str, clock: Clock) -> Decoded:
    service = service_of(shape)
    if isinstance(service, Rejected):
        return service
    host = host_of(shape)
    if isinstance(host, Rejected):
        return host
    when = clock.event_time(shape)
    if isinstance(when, Rejected):
        return when
    event_time, flags = when
    level = LEVELS.get(shape.level) if type(shape.level) is str else None
    if level is None and (found := raw_level(shape)) is not None:
        normalised = normalise_level(*found)
        if isinstance(normalised, Rejected):
            return normalised
        if normalised is None:
            flags = (*flags, LEVEL_UNRECOGNISED)
        level = normalised
    return DecodedRecord(
        kind=Kind.LOGS,
        data=text,
        event_time=event_time,
        service=service,
        host=host,
        level=level,
        is_error=level in ERROR_LEVELS,
        flags=flags,
    )


_MetricParts = tuple[str, str | None, tuple[MetricSample, ...]]


def _build_metric(shape: MetricShape, text: str, clock: Clock) -> Decoded:
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


def _plain_parts(shape: MetricShape) -> _MetricParts | Rejected:
    service = service_of(shape)
    if isinstance(service, Rejected):
        return service
    host = host_of(shape)
    if isinstance(host, Rejected):
        return host
    samples = _plain_samples(shape)
    if isinstance(samples, Rejected):
        return samples
    return service, host, samples


def _telegraf_parts(shape: MetricShape) -> _MetricParts | Rejected:
    tags = _telegraf_tags(shape)
    if isinstance(tags, Rejected):
        return tags
    service = _telegraf_service(shape, tags)
    if isinstance(service, Rejected):
        return service
    host = optional_text("tags.host", tags["host"]) if "host" in tags else host_of(shape)
    if isinstance(host, Rejected):
        return host
    samples = _telegraf_samples(shape)
    if isinstance(samples, Rejected):
        return samples
    return service, host, samples


def _plain_samples(shape: MetricShape) -> tuple[MetricSample, ...] | Rejected:
    name = required_name("name", shape.name)
    if isinstance(name, Rejected):
        return name
    if shape.value is None:
        return Rejected("missing required field 'value'")
    value = metric_value("value", shape.value)
    if isinstance(value, Rejected):
        return value
    return (MetricSample(name, value),)


def _telegraf_tags(shape: MetricShape) -> dict[str, Any] | Rejected:
    if shape.tags is None:
        return {}
    if not isinstance(shape.tags, dict):
        return wrong_type("tags", "object", shape.tags)
    return shape.tags


def _telegraf_service(shape: MetricShape, tags: dict[str, Any]) -> str | Rejected:
    if tags.get("service") is not None:
        return required_name("tags.service", tags["service"])
    if tags.get("app") is not None:
        return required_name("tags.app", tags["app"])
    return service_of(shape)


def _telegraf_samples(shape: MetricShape) -> tuple[MetricSample, ...] | Rejected:
    measurement = required_name("name", shape.name)
    if isinstance(measurement, Rejected):
        return measurement
    if not isinstance(shape.fields, dict):
        return wrong_type("fields", "object", shape.fields)
    samples: list[MetricSample] = []
    for field, raw in shape.fields.items():
        if type(raw) is bool:  # Telegraf's boolean fields (e.g. "up") count as 1/0
            value: float | Rejected = 1.0 if raw else 0.0
        elif type(raw) is int or type(raw) is float:
            value = metric_value(f"fields.{field}", raw)
        else:
            continue  # string fields (e.g. status text) are not samples
        if isinstance(value, Rejected):
            return value
        name = required_name(f"fields.{field}", f"{measurement}_{field}")
        if isinstance(name, Rejected):
            return name
        samples.append(MetricSample(name, value))
    if not samples:
        return Rejected("Telegraf metric has no numeric field in 'fields'")
    return tuple(samples)


def _build_event(shape: EventShape, text: str, clock: Clock) -> Decoded:
    if shape.kind == "Event" and shape.service is None:
        return _kubernetes_event(text, clock)
    service = service_of(shape)
    if isinstance(service, Rejected):
        return service
    event_type = required_name("type", shape.type)
    if isinstance(event_type, Rejected):
        return event_type
    host = host_of(shape)
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


def _kubernetes_event(text: str, clock: Clock) -> Decoded:
    """A Kubernetes Event object: an event of the involved object's service (see
    ingest.kubernetes), typed ``kubernetes:<reason>``. Events are few, so the fields are read
    from a plain dict rather than a typed shape."""
    event = msgspec.json.decode(text)
    service = k8s.service_of_event(event)
    if service is None:
        return Rejected("Kubernetes Event names no object: missing 'involvedObject.name'")
    name = required_name("involvedObject", service)
    if isinstance(name, Rejected):
        return name
    found = k8s.time_of_event(event)
    when = clock.fallback() if found is None else clock.at(*found)
    if isinstance(when, Rejected):
        return when
    return DecodedRecord(
        kind=Kind.EVENTS,
        data=text,
        event_time=round(when[0], 6),
        service=name,
        host=k8s.host_of_event(event),
        event_type=k8s.event_type_of(event),
        flags=when[1],
    )
