"""OTLP metric data points -> one ``DecodedRecord`` (kind metrics) each, or a ``Rejected`` for
that point. Reads a parsed ``ExportMetricsServiceRequest`` of either encoding (see
``encodings``); the mapping, and which points become which samples, is in the package docstring.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from rtmh.ingest.otlp import buckets
from rtmh.ingest.otlp.encodings import Encoding, json_number
from rtmh.ingest.otlp.resource import (
    NUL_REPLACED,
    attributes_and_service,
    clean,
    encode_data,
    event_time,
    nanos_time,
    resource_host,
    resource_service,
    rfc3339,
    scope_of,
)
from rtmh.ingest.shapes import MAX_METRIC_MAGNITUDE, TS_OUT_OF_RANGE, Clock, required_name
from rtmh.records import (
    CumulativeSample,
    Decoded,
    DecodedRecord,
    HistogramSample,
    Kind,
    MetricSample,
    Rejected,
    Sample,
)

DELTA: Final = 1
CUMULATIVE: Final = 2
TEMPORALITIES: Final = {DELTA: "delta", CUMULATIVE: "cumulative"}
#: DataPointFlags.FLAG_NO_RECORDED_VALUE_MASK: the point marks a gap (e.g. a stale series)
NO_RECORDED_VALUE: Final = 1

# flags of a point stored without samples (kept out of the windows), see the package docstring
FLAG_NO_RECORDED_VALUE: Final = "no_recorded_value"
FLAG_NO_VALUE: Final = "value_missing"
FLAG_NOT_FINITE: Final = "value_not_finite"
FLAG_TOO_LARGE: Final = "value_too_large"
FLAG_UNSPECIFIED: Final = "temporality_unspecified"

_encode: Final = msgspec.json.Encoder().encode
_Samples = tuple[tuple[Sample, ...], tuple[str, ...]]


class _Metric(msgspec.Struct, gc=False):
    """What every point of one metric shares."""

    name: str
    series_head: list[Any]
    type: str
    body: Any
    head: dict[str, Any]


def decode_metrics(request: Any, enc: Encoding, clock: Clock) -> list[Decoded]:
    """One result per data point, in document order, ``index`` counting every point."""
    out: list[Decoded] = []
    index = 0
    for r, resource_metrics in enumerate(request.resource_metrics):
        resource = enc.attributes(resource_metrics.resource.attributes)
        service = resource_service(resource)
        host = resource_host(resource)
        resource_items = sorted(resource.items())
        for s, scope_metrics in enumerate(resource_metrics.scope_metrics):
            for m, metric in enumerate(scope_metrics.metrics):
                found = enc.metric_data(metric)
                if found is None:
                    continue  # no data oneof: no points
                ctx = _context(metric, *found, resource_items, scope_metrics, host, resource)
                for p, point in enumerate(found[1].data_points):
                    if isinstance(service, Rejected):
                        item: Decoded = service
                    elif isinstance(ctx, Rejected):
                        item = ctx
                    else:
                        item = _point(point, ctx, enc, clock, service, index)
                    if isinstance(item, Rejected):
                        item = Rejected(item.reason, index, enc.cut_point(request, r, s, m, p))
                    out.append(item)
                    index += 1
    return out


def _context(
    metric: Any,
    kind: str,
    body: Any,
    resource_items: list[tuple[str, Any]],
    scope_metrics: Any,
    host: str | None,
    resource: dict[str, Any],
) -> _Metric | Rejected:
    name = required_name("metric.name", clean(metric.name))
    if isinstance(name, Rejected):
        return name
    scope = scope_of(scope_metrics.scope)
    series_head = [resource_items, scope_metrics.scope.name, name]
    head = _head(name, metric, kind, body, host, resource, scope)
    return _Metric(name, series_head, kind, body, head)


def _head(
    name: str,
    metric: Any,
    kind: str,
    body: Any,
    host: str | None,
    resource: dict[str, Any],
    scope: dict[str, str] | None,
) -> dict[str, Any]:
    """The keys of ``data`` every point of the metric shares, in their order (time and service
    are filled per point); ``attributes`` and the values follow."""
    head: dict[str, Any] = {"otlp": "metric", "ts": None, "service": None, "host": host}
    head["name"] = name
    if metric.unit:
        head["unit"] = metric.unit
    if metric.description:
        head["description"] = metric.description
    head["type"] = kind
    if kind != "gauge" and kind != "summary":
        temporality = body.aggregation_temporality
        head["temporality"] = TEMPORALITIES.get(temporality, "unspecified")
    if kind == "sum":
        head["monotonic"] = body.is_monotonic
    head["resource"] = resource
    if scope is not None:
        head["scope"] = scope
    return head


def _point(
    point: Any, ctx: _Metric, enc: Encoding, clock: Clock, service: str | None, index: int
) -> Decoded:
    found = attributes_and_service(enc, point.attributes, service)
    if isinstance(found, Rejected):
        return found
    attributes, service = found
    time_ns = point.time_unix_nano
    when, flags = event_time(clock, time_ns)
    data = dict(ctx.head)
    data["ts"] = rfc3339(when)
    data["service"] = service
    if time_ns and flags == TS_OUT_OF_RANGE:
        data["time_unix_nano"] = time_ns  # the point's own time, not believed: kept as sent
    if point.start_time_unix_nano:
        data["start_ts"] = nanos_time(point.start_time_unix_nano)
    data["attributes"] = attributes
    time_ns = time_ns or round(when * 1e9)
    samples: _Samples | Rejected
    if ctx.type == "gauge" or ctx.type == "sum":
        samples = _number(point, ctx, enc, data, attributes, time_ns)
    elif ctx.type == "histogram":
        samples = _histogram(point, ctx, enc, data, attributes, time_ns)
    elif ctx.type == "exponential_histogram":
        samples = _exponential(point, ctx, enc, data, attributes, time_ns)
    else:
        samples = _summary(point, data)
    if isinstance(samples, Rejected):
        return samples
    if point.flags & NO_RECORDED_VALUE:
        data["no_recorded_value"] = True
        samples = ((), (FLAG_NO_RECORDED_VALUE,))
    try:
        text, replaced = encode_data(data)
    except (RecursionError, OverflowError, TypeError, msgspec.EncodeError) as exc:
        return Rejected(f"data point cannot be written as JSON: {exc}")
    flags = (*flags, *samples[1], NUL_REPLACED) if replaced else (*flags, *samples[1])
    return DecodedRecord(
        kind=Kind.METRICS,
        data=text,
        event_time=when,
        service=service,
        host=data["host"],
        samples=samples[0],
        flags=flags,
        index=index,
    )


def series(ctx: _Metric, attributes: dict[str, Any]) -> str:
    """Identifies a cumulative series across messages: the resource's attributes, the scope's
    name, the metric's name and the point's attributes, sorted, as compact JSON."""
    return _encode([*ctx.series_head, sorted(attributes.items())]).decode()


def _usable(value: float) -> str | None:
    """None for a value the windows can sum, else the flag saying why not."""
    if not math.isfinite(value):
        return FLAG_NOT_FINITE
    return FLAG_TOO_LARGE if abs(value) > MAX_METRIC_MAGNITUDE else None


def _number(
    point: Any,
    ctx: _Metric,
    enc: Encoding,
    data: dict[str, Any],
    attributes: dict[str, Any],
    time_ns: int,
) -> _Samples:
    raw = enc.number(point)
    if raw is None:
        return (), (FLAG_NO_VALUE,)
    data["value"] = json_number(raw) if type(raw) is float else raw
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond the float range (JSON numbers have no bound)
        return (), (FLAG_TOO_LARGE,)
    flag = _usable(value)
    if flag is not None:
        return (), (flag,)
    if ctx.type == "gauge":
        return (MetricSample(ctx.name, value),), ()
    body = ctx.body
    temporality = body.aggregation_temporality
    if temporality == DELTA or (temporality == CUMULATIVE and not body.is_monotonic):
        return (MetricSample(ctx.name, value),), ()  # an increment; or a level (up-down counter)
    if temporality != CUMULATIVE:
        return (), (FLAG_UNSPECIFIED,)
    start_ns = point.start_time_unix_nano
    cumulative = CumulativeSample(ctx.name, series(ctx, attributes), start_ns, time_ns, value=value)
    return (cumulative,), ()


def _histogram(
    point: Any,
    ctx: _Metric,
    enc: Encoding,
    data: dict[str, Any],
    attributes: dict[str, Any],
    time_ns: int,
) -> _Samples | Rejected:
    total, low, high = _summary_values(point, enc, data)
    bounds = list(point.explicit_bounds)
    counts = list(point.bucket_counts)
    data["bucket_counts"] = counts
    data["explicit_bounds"] = [json_number(bound) for bound in bounds]
    if counts and len(counts) != len(bounds) + 1:
        return Rejected(
            f"histogram point has {len(counts)} bucket counts for {len(bounds)} explicit bounds"
            f" (expected {len(bounds) + 1})"
        )
    if not buckets.strictly_increasing(bounds):
        return Rejected("histogram explicit_bounds are not finite and strictly increasing")
    flag = _first_flag(total, low, high)
    if flag is not None:
        return (), (flag,)
    pairs = buckets.explicit(bounds, counts, low, high, total)
    return _histogram_sample(ctx, point, attributes, time_ns, total, low, high, pairs)


def _exponential(
    point: Any,
    ctx: _Metric,
    enc: Encoding,
    data: dict[str, Any],
    attributes: dict[str, Any],
    time_ns: int,
) -> _Samples | Rejected:
    total, low, high = _summary_values(point, enc, data)
    scale = point.scale
    data["scale"] = scale
    data["zero_count"] = point.zero_count
    if point.zero_threshold:
        data["zero_threshold"] = json_number(point.zero_threshold)
    positive = (point.positive.offset, list(point.positive.bucket_counts))
    negative = (point.negative.offset, list(point.negative.bucket_counts))
    data["positive"] = {"offset": positive[0], "bucket_counts": positive[1]}
    data["negative"] = {"offset": negative[0], "bucket_counts": negative[1]}
    if not buckets.MIN_SCALE <= scale <= buckets.MAX_SCALE:
        return Rejected(
            f"exponential histogram scale {scale} is outside"
            f" {buckets.MIN_SCALE}..{buckets.MAX_SCALE}"
        )
    flag = _first_flag(total, low, high)
    if flag is not None:
        return (), (flag,)
    try:
        pairs = buckets.exponential(scale, point.zero_count, positive, negative)
    except OverflowError:
        return (), (FLAG_TOO_LARGE,)
    if pairs and max(abs(pairs[0][0]), abs(pairs[-1][0])) > MAX_METRIC_MAGNITUDE:
        return (), (FLAG_TOO_LARGE,)
    return _histogram_sample(ctx, point, attributes, time_ns, total, low, high, pairs)


def _summary(point: Any, data: dict[str, Any]) -> _Samples:
    """Stored, never windowed: a summary's quantiles cannot be merged with other points'."""
    data["count"] = point.count
    data["sum"] = json_number(point.sum)
    data["quantile_values"] = [
        {"quantile": json_number(q.quantile), "value": json_number(q.value)}
        for q in point.quantile_values
    ]
    return (), ()


def _summary_values(
    point: Any, enc: Encoding, data: dict[str, Any]
) -> tuple[float | None, float | None, float | None]:
    """A histogram point's sum, min and max (each optional), also written into ``data``."""
    total = enc.optional(point, "sum")
    low = enc.optional(point, "min")
    high = enc.optional(point, "max")
    data["count"] = point.count
    if total is not None:
        data["sum"] = json_number(total)
    if low is not None:
        data["min"] = json_number(low)
    if high is not None:
        data["max"] = json_number(high)
    return total, low, high


def _first_flag(*values: float | None) -> str | None:
    for value in values:
        if value is not None:
            flag = _usable(value)
            if flag is not None:
                return flag
    return None


def _histogram_sample(
    ctx: _Metric,
    point: Any,
    attributes: dict[str, Any],
    time_ns: int,
    total: float | None,
    low: float | None,
    high: float | None,
    pairs: buckets.Buckets,
) -> _Samples:
    temporality = ctx.body.aggregation_temporality
    if temporality == DELTA:
        return (HistogramSample(ctx.name, point.count, total, low, high, pairs),), ()
    if temporality != CUMULATIVE:
        return (), (FLAG_UNSPECIFIED,)
    # a cumulative point's min / max are over the series' whole life, not the interval
    running = HistogramSample(ctx.name, point.count, total, None, None, pairs)
    start_ns = point.start_time_unix_nano
    sample = CumulativeSample(
        ctx.name, series(ctx, attributes), start_ns, time_ns, histogram=running
    )
    return (sample,), ()
