"""Stage 1, OTLP: one Kafka message from the OpenTelemetry Collector's Kafka exporter -> one
``DecodedRecord`` per log record or metric data point (or a ``Rejected`` for that record).

Role in the data flow: ``decode.decode_message`` asks here first for logs and metrics topics;
None means "not OTLP" and the message goes to the native JSON decoder. Both encodings the
exporter writes are recognised per message from their first bytes, without configuration:
``otlp_proto`` (the default) starts with byte 0x0A (field 1, length-delimited), which no JSON
text does unless it starts with a newline (such a message is sent back as JSON); ``otlp_json``
starts ``{"resourceLogs"`` / ``{"resourceMetrics"`` (the Collector's pdata marshaler writes the
request's only field first and compact; whitespace before the key is allowed). Pure: no I/O;
bad input never raises.

Whole-message refusals (one ``Rejected`` with index None): over the size limit, not parseable
(bad protobuf, bad JSON), the other signal (metrics on a logs topic or the reverse; traces).
Otherwise one result per record in document order, ``index`` 0..n-1 counting every record; a
record that cannot be stored becomes ``Rejected(reason, index, payload)`` with that record cut
out as an OTLP request of its own (same encoding, its resource, scope and metric), so a replay
of the dead letter yields exactly that record; its siblings are stored. An empty request yields
no records (nothing stored, nothing dead-lettered: an export with nothing in it lost nothing).

Logs (``logs``):

=================== ===============================================================================
 column              from
=================== ===============================================================================
 service             first of ``resource.SERVICE_ATTRIBUTES`` in the resource attributes:
                     ``service.name`` (not the SDK default ``unknown_service[:*]``),
                     ``k8s.pod.labels.app.kubernetes.io/name``, ``k8s.pod.labels.app``,
                     ``k8s.deployment.name``, ``k8s.statefulset.name``, ``k8s.daemonset.name``,
                     ``k8s.cronjob.name``, ``k8s.job.name``, ``k8s.container.name``,
                     ``k8s.pod.name`` (reduced to its workload: ``web-7d9f8c6b5-x2x9z`` -> ``web``);
                     then the record's own ``service.name`` attribute; else the record is refused
                     ("no service: ..."). A name over 200 characters is refused as native ones.
 host                resource ``host.name``, else ``k8s.node.name``
 level               ``severityNumber`` 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error,
                     21-24 fatal; else ``severityText`` read as native levels are (unknown text:
                     no level and the ``level_unrecognised`` flag); else none
 is_error            level is error or fatal
 event_time          ``timeUnixNano``, else ``observedTimeUnixNano``, else the broker timestamp
                     (else now); beyond the past/future bounds: the broker time and the
                     ``ts_out_of_range`` flag, as native messages. Rounded to the microsecond.
 data                ``{"otlp": "log", "ts", "service", "host", "level", "msg", "severity_number",
                     "severity_text", "attributes", "resource", "scope": {"name", "version"},
                     "trace_id", "span_id", "event_name", "observed_ts"}``; ``msg`` is the body (a
                     string as is, other values as JSON); optional keys only when set
=================== ===============================================================================

Metrics (``metrics``): one record per data point, service / host as for logs (the point's own
``service.name`` attribute last), event_time from the point's ``timeUnixNano``. Samples (what
the windows see; the metric name is checked as native names are):

=============================== =================================================================
 point                           samples
=============================== =================================================================
 gauge                           ``MetricSample(name, value)``
 sum, delta                      ``MetricSample(name, value)``: the increment
 sum, cumulative, monotonic      ``CumulativeSample(name, series, start_ns, time_ns, value)``:
                                 ``ingest.deltas`` turns it into the increment, restarts detected
 sum, cumulative, not monotonic  ``MetricSample(name, value)``: an up-down counter is a level
 histogram, delta                ``HistogramSample(name, count, sum, min, max, buckets)``
 histogram, cumulative           ``CumulativeSample(..., histogram=HistogramSample(...))`` whose
                                 min / max are None (a cumulative point's are lifetime values)
 exponential histogram           as histogram; buckets at their geometric midpoints
 summary                         none: stored, not windowed (quantiles of different points
                                 cannot be merged)
=============================== =================================================================

``series`` (``metrics.series``) is the compact JSON of the resource's attributes, the scope
name, the metric name and the point's attributes, sorted: the same series gives the same text
in every message. Bucket values are approximate (see ``buckets``): explicit bucket (a, b] stands
for its midpoint, the open first / last bucket for the point's min / max when they lie beyond
the bound (else the bound); exponential bucket i for ``base**(i + 0.5)``, the zero bucket for 0.

Points stored with no samples, and a flag saying why: ``no_recorded_value`` (the
NoRecordedValue flag), ``value_missing`` (no value set), ``value_not_finite`` (NaN or
±Infinity in the value, sum, min or max: OTLP allows them, the windows cannot sum them),
``value_too_large`` (beyond ±1e300, where window sums could overflow, as native metrics are
refused), ``temporality_unspecified``. A point is refused (dead-lettered on its own) for a bad
metric name, bucket counts that do not match the explicit bounds, bounds that are not finite and
strictly increasing, or an exponential scale outside -10..20.

Metrics ``data``: ``{"otlp": "metric", "ts", "service", "host", "name", "unit", "description",
"type": "gauge|sum|histogram|exponential_histogram|summary", "temporality": "delta|cumulative",
"monotonic", "resource", "scope", "start_ts", "attributes"}`` then ``"value"``, or ``"count",
"sum", "min", "max"`` with ``"bucket_counts", "explicit_bounds"`` (histogram), ``"scale",
"zero_count", "zero_threshold", "positive": {"offset", "bucket_counts"}, "negative"``
(exponential) or ``"quantile_values"`` (summary).

Both: AnyValue becomes plain JSON (string, integer, double, boolean, array, kvlist -> object,
bytes -> base64); non-finite doubles become the strings "NaN" / "Infinity" / "-Infinity" (OTLP
JSON's own spelling), so ``data`` holds finite numbers only. NUL characters, which PostgreSQL
text and jsonb refuse, are replaced by U+FFFD (flag ``nul_replaced``) rather than losing the
record. A record whose own time was not believed keeps it in ``data`` as ``time_unix_nano``.
"""

from __future__ import annotations

from typing import Final

from rtmh.ingest.otlp.encodings import (
    Encoding,
    JsonEncoding,
    ParseError,
    ProtoEncoding,
    proto_signal,
)
from rtmh.ingest.otlp.logs import decode_logs
from rtmh.ingest.otlp.metrics import decode_metrics
from rtmh.ingest.otlp.resource import SERVICE_ATTRIBUTES
from rtmh.ingest.shapes import Clock
from rtmh.records import Decoded, KafkaMessage, Kind, Rejected

__all__ = ["SERVICE_ATTRIBUTES", "decode_otlp", "may_be_otlp"]

_PROTO_FIRST_BYTE: Final = 0x0A
_PROTOBUF: Final = "protobuf"
_TRACES: Final = "traces"
#: the first key of an OTLP JSON request, and the signal it carries
_JSON_KEYS: Final[tuple[tuple[bytes, Kind | str], ...]] = (
    (b'"resourceLogs"', Kind.LOGS),
    (b'"resourceMetrics"', Kind.METRICS),
    (b'"resourceSpans"', _TRACES),
)
_WHITESPACE: Final = b" \t\r\n"
#: how far a JSON message's leading whitespace is searched for the first key
_PREFIX: Final = 64


def decode_otlp(
    msg: KafkaMessage,
    kind: Kind,
    *,
    max_bytes: int,
    now: float,
    max_past_s: float,
    max_future_s: float,
) -> list[Decoded] | None:
    """The records of an OTLP request (see the module docstring), None when ``msg`` is not OTLP
    or ``kind`` takes no OTLP (events)."""
    raw = msg.value
    if not raw or kind is Kind.EVENTS:
        return None
    found = _recognise(raw)
    if found is None:
        return None
    if len(raw) > max_bytes:
        return [Rejected(f"message is {len(raw)} bytes, over the {max_bytes}-byte limit")]
    enc: Encoding
    signal: Kind | str
    if found == _PROTOBUF:
        enc, signal = ProtoEncoding(raw), proto_signal(raw) or kind
    else:
        enc, signal = JsonEncoding(raw), found
    if signal is not kind:
        return [Rejected(_other_signal(enc, signal, kind))]
    try:
        request = enc.parse(kind)
    except ParseError as exc:
        return [Rejected(str(exc))]
    clock = Clock(msg, now, max_past_s, max_future_s)
    try:
        if kind is Kind.LOGS:
            return decode_logs(request, enc, clock)
        return decode_metrics(request, enc, clock)
    except RecursionError:  # resource or scope attributes nested beyond Python's stack
        return [Rejected(f"OTLP {enc.name} request nested too deeply")]


def may_be_otlp(raw: bytes) -> bool:
    """False for compact JSON whose first key is not an OTLP request's (every native message a
    JSON encoder writes): two slices, so the caller can skip ``decode_otlp`` altogether (the call
    alone cost a native message ~0.8 µs of its ~4 µs decode, measured)."""
    return raw[:10] == b'{"resource' or raw[:2] != b'{"'


def _recognise(raw: bytes) -> Kind | str | None:
    """``_PROTOBUF``, or the signal of OTLP JSON (``_TRACES`` for traces); None for anything
    else."""
    if not may_be_otlp(raw):
        return None
    if raw.startswith(b'{"'):
        return _json_signal(raw[1:_PREFIX])
    first = raw[0]
    if first == _PROTO_FIRST_BYTE:
        if raw[:_PREFIX].lstrip(_WHITESPACE)[:1] != b"{":
            return _PROTOBUF
    elif first not in _WHITESPACE and first != ord("{"):
        return None
    head = raw[:_PREFIX].lstrip(_WHITESPACE)
    if head[:1] != b"{":
        return None
    return _json_signal(head[1:].lstrip(_WHITESPACE))


def _json_signal(head: bytes) -> Kind | str | None:
    for key, signal in _JSON_KEYS:
        if head.startswith(key):
            return signal
    return None


def _other_signal(enc: Encoding, signal: Kind | str, kind: Kind) -> str:
    found = signal.value if isinstance(signal, Kind) else signal
    return (
        f"OTLP {enc.name} {found} request on a {kind.value} topic, which takes OTLP"
        f" {kind.value} only"
    )
