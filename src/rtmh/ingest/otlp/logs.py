"""OTLP log records -> one ``DecodedRecord`` (kind logs) each, or a ``Rejected`` for that record.

Reads a parsed ``ExportLogsServiceRequest`` of either encoding (see ``encodings``); the mapping
is in the package docstring.
"""

from __future__ import annotations

from typing import Any, Final

from rtmh.ingest.otlp.encodings import Encoding
from rtmh.ingest.otlp.resource import (
    NUL_REPLACED,
    attributes_and_service,
    encode_data,
    event_time,
    nanos_time,
    resource_host,
    resource_service,
    rfc3339,
    scope_of,
)
from rtmh.ingest.shapes import (
    ERROR_LEVELS,
    LEVEL_UNRECOGNISED,
    TS_OUT_OF_RANGE,
    Clock,
    normalise_level,
)
from rtmh.records import Decoded, DecodedRecord, Kind, Rejected

#: SeverityNumber 1-4 TRACE .. 21-24 FATAL (the log data model's ranges)
SEVERITY_LEVELS: Final = ("trace", "debug", "info", "warn", "error", "fatal")


def decode_logs(request: Any, enc: Encoding, clock: Clock) -> list[Decoded]:
    """One result per log record, in document order, ``index`` counting every record."""
    out: list[Decoded] = []
    index = 0
    for r, resource_logs in enumerate(request.resource_logs):
        resource = enc.attributes(resource_logs.resource.attributes)
        service = resource_service(resource)
        host = resource_host(resource)
        for s, scope_logs in enumerate(resource_logs.scope_logs):
            scope = scope_of(scope_logs.scope)
            for k, record in enumerate(scope_logs.log_records):
                if isinstance(service, Rejected):
                    item: Decoded = service
                else:
                    item = _log(record, enc, clock, service, host, resource, scope, index)
                if isinstance(item, Rejected):
                    item = Rejected(item.reason, index, enc.cut_log(request, r, s, k))
                out.append(item)
                index += 1
    return out


def _log(
    record: Any,
    enc: Encoding,
    clock: Clock,
    service: str | None,
    host: str | None,
    resource: dict[str, Any],
    scope: dict[str, str] | None,
    index: int,
) -> Decoded:
    found = attributes_and_service(enc, record.attributes, service)
    if isinstance(found, Rejected):
        return found
    attributes, service = found
    time_ns = record.time_unix_nano
    observed_ns = record.observed_time_unix_nano
    when, flags = event_time(clock, time_ns, observed_ns)
    level, unrecognised = level_of(record.severity_number, record.severity_text)
    if unrecognised:
        flags = (*flags, LEVEL_UNRECOGNISED)
    data: dict[str, Any] = {
        "otlp": "log",
        "ts": rfc3339(when),
        "service": service,
        "host": host,
        "level": level,
    }
    try:
        body = enc.value(record.body)
    except RecursionError:
        return Rejected("body nested too deeply")
    if body is not None:
        data["msg"] = body
    if record.severity_number:
        data["severity_number"] = record.severity_number
    if record.severity_text:
        data["severity_text"] = record.severity_text
    data["attributes"] = attributes
    data["resource"] = resource
    if scope is not None:
        data["scope"] = scope
    if trace_id := enc.hex_id(record.trace_id):
        data["trace_id"] = trace_id
    if span_id := enc.hex_id(record.span_id):
        data["span_id"] = span_id
    if record.event_name:
        data["event_name"] = record.event_name
    if observed_ns:
        data["observed_ts"] = nanos_time(observed_ns)
    if time_ns and TS_OUT_OF_RANGE[0] in flags:
        data["time_unix_nano"] = time_ns  # the record's own time, not believed: kept as sent
    try:
        text, replaced = encode_data(data)
    except (RecursionError, OverflowError, TypeError) as exc:
        return Rejected(f"record cannot be written as JSON: {exc}")
    if replaced:
        flags = (*flags, NUL_REPLACED)
    return DecodedRecord(
        kind=Kind.LOGS,
        data=text,
        event_time=when,
        service=service,
        host=host,
        level=level,
        is_error=level in ERROR_LEVELS,
        flags=flags,
        index=index,
    )


def level_of(number: int, text: str) -> tuple[str | None, bool]:
    """The normalised level and whether the record gave one that is not understood: the
    severityNumber range, else severityText as native levels are read, else none."""
    if 1 <= number <= 24:
        return SEVERITY_LEVELS[(number - 1) >> 2], False
    if text:
        level = normalise_level("severityText", text)
        if isinstance(level, str):
            return level, False
        return None, True
    return None, number != 0
