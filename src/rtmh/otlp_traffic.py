"""The simulator's traffic as the OpenTelemetry Collector's Kafka exporter writes it: OTLP.

``OtlpTraffic`` is ``rtmh.simulate.Traffic`` (same scenarios, same random draws, same observer)
whose log lines and latency samples are buffered and exported, every ``export_interval_s`` of run
time, as OTLP export requests built with the official ``opentelemetry-proto`` classes:

- logs: one ``ExportLogsServiceRequest`` per service per export (at most ``max_records`` records
  a message), one ``ResourceLogs`` per host (resource ``service.name``, ``host.name``, ``k8s.*``),
  each line a ``LogRecord`` with severityNumber + severityText, the message as body, the request
  id as an attribute and trace/span ids derived from it;
- metrics: the latency samples as a CUMULATIVE explicit-bucket histogram (what SDKs send by
  default), one series per (service, host, path) with a running state, one data point per series
  that saw requests since the last export; the host CPU / memory readings as gauges;
- events stay native JSON, produced as they come: OTLP has no events signal.

``rtmh simulate`` exports every 0.2 s (the Collector batch processor's default timeout), so a
message carries ~20 records per service at 1,000 records/s; the ingest benchmark at every 0.1 s
step of its 5,000 records/s (~50 log records a message). ``flush`` exports what is left at the
end of a run.

Encodings: ``otlp-proto`` (``SerializeToString``, the exporter's default) and ``otlp-json`` (OTLP
JSON as the Collector writes it: camelCase keys, enums as integers, 64-bit integers as strings,
trace and span ids as hex). ``records`` counts what the messages carry, per kind.

Used by ``rtmh simulate --format`` and by ``rtmh bench ingest``'s OTLP runs; the tests parse the
messages back with the same classes.
"""

from __future__ import annotations

import base64
import hashlib
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgspec
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from rtmh.simulate import SERVICES, LogLine, Message, Scenario, Traffic

Format = Literal["json", "otlp-proto", "otlp-json"]
#: what ``rtmh simulate --format`` and ``rtmh bench ingest --format`` accept
FORMATS: Final[tuple[Format, ...]] = ("json", "otlp-proto", "otlp-json")

#: the latency histogram's explicit bounds (ms): the simulator's latencies are lognormal around
#: 37 ms, and x8 under a latency spike
LATENCY_BOUNDS: Final = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)
LATENCY_METRIC: Final = "http_request_duration_ms"
#: the Kubernetes namespace of the simulated pods (resource k8s.namespace.name)
NAMESPACE: Final = "shop"
SCOPE: Final = InstrumentationScope(name="rtmh.simulate", version="1")

#: the simulator's levels as OTLP severity numbers (the first of each range of the spec)
SEVERITY: Final = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}

#: the id fields OTLP JSON writes as hex where protobuf's JSON mapping writes base64
_HEX_IDS: Final = frozenset({"traceId", "spanId", "parentSpanId"})

_decode_native = msgspec.json.Decoder(dict[str, Any]).decode
_encode_json = msgspec.json.Encoder().encode


def otlp_json(request: ExportLogsServiceRequest | ExportMetricsServiceRequest) -> bytes:
    """An export request as OTLP JSON, the Collector's ``otlp_json`` encoding: protobuf's JSON
    mapping (camelCase, 64-bit integers as strings) with enums as integers and ids as hex."""
    doc = json_format.MessageToDict(request, use_integers_for_enums=True)
    return _encode_json(_hex_ids(doc))


def _hex_ids(node: Any) -> Any:
    """``node`` with every trace / span id turned from base64 into lower-case hex, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_IDS and isinstance(value, str):
                node[key] = _base64_to_hex(value)
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)
    return node


def _base64_to_hex(text: str) -> str:
    return base64.b64decode(text).hex()


def attributes(values: dict[str, str]) -> list[KeyValue]:
    """String attributes as OTLP key-values."""
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in values.items()]


def resource(service: str, host: str) -> Resource:
    """A simulated pod's resource: what the Collector's k8sattributes processor would attach."""
    return Resource(
        attributes=attributes(
            {
                "service.name": service,
                "host.name": host,
                "k8s.namespace.name": NAMESPACE,
                "k8s.deployment.name": service,
                "k8s.pod.name": host,
            }
        )
    )


def trace_ids(request_id: str) -> tuple[bytes, bytes]:
    """(trace id, span id) of a request, derived from its id so the same run gives the same ids."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=24).digest()
    return digest[:16], digest[16:]


def nanos(epoch_s: float) -> int:
    return round(epoch_s * 1e9)


@dataclass(slots=True)
class RunningHistogram:
    """A cumulative histogram series: totals since ``start_ns``, as an SDK keeps them."""

    start_ns: int
    count: int = 0
    sum: float = 0.0
    min: float = float("inf")
    max: float = float("-inf")
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        # bucket i holds bounds[i-1] < v <= bounds[i] (OTLP's rule): bisect_left finds i
        self.buckets[bisect_left(LATENCY_BOUNDS, value)] += 1

    def point(self, path: str, time_ns: int) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=attributes({"path": path}),
            start_time_unix_nano=self.start_ns,
            time_unix_nano=time_ns,
            count=self.count,
            sum=self.sum,
            min=self.min,
            max=self.max,
            bucket_counts=self.buckets,
            explicit_bounds=LATENCY_BOUNDS,
        )


#: one data point of a tick, before it is placed in a request: (host, metric name, point)
_Point = tuple[str, str, HistogramDataPoint | NumberDataPoint]


class OtlpTraffic(Traffic):
    """``Traffic`` whose logs and metrics come out as OTLP export requests (see the module)."""

    def __init__(
        self,
        plan: Scenario,
        services: tuple[str, ...] = SERVICES,
        seed: int | None = None,
        on_log: Callable[[LogLine], None] | None = None,
        *,
        encoding: Format = "otlp-proto",
        max_records: int = 1000,
        export_interval_s: float = 0.0,
    ):
        if encoding not in ("otlp-proto", "otlp-json"):
            raise ValueError(f"OtlpTraffic encodes otlp-proto or otlp-json, not {encoding!r}")
        super().__init__(plan, services, seed, on_log)
        self.encoding = encoding
        self.max_records = max_records
        #: records carried by the messages made so far, per kind (an event is one record)
        self.records: Counter[str] = Counter()
        #: (service, host, path) -> its cumulative latency histogram
        self.histograms: dict[tuple[str, str, str], RunningHistogram] = {}
        #: when the simulated SDKs started: the start time of every cumulative series
        self.started_ns: int | None = None
        #: run time between exports; 0 exports every call's records at its end
        self.export_interval_s = export_interval_s
        self._next_export = 0.0
        #: buffered until the next export: log lines and gauge readings per service, and the
        #: (host, path) histogram series each service's samples touched
        self._buffered_logs: dict[str, list[dict[str, Any]]] = {}
        self._buffered_gauges: dict[str, list[dict[str, Any]]] = {}
        self._touched: dict[str, set[tuple[str, str]]] = {}

    def messages(self, t: float, requests: int, now: float | None = None) -> Iterator[Message]:
        """The tick's messages: events as they are; the log lines and samples are buffered and
        exported (``flush``) once ``export_interval_s`` of run time passed since the last export
        (at every call when it is 0)."""
        wall = time.time() if now is None else now
        if self.started_ns is None:
            # the SDKs started a second before their first export (a cumulative series' first
            # point then covers an interval, as a real one does)
            self.started_ns = nanos(wall) - 1_000_000_000
        for kind, key, value in super().messages(t, requests, wall):
            if kind == "events":
                self.records["events"] += 1
                yield kind, key, value
                continue
            body = _decode_native(value)
            service = body["service"]
            if kind == "logs":
                self._buffered_logs.setdefault(service, []).append(body)
            elif body["name"] == LATENCY_METRIC:
                self._observe(service, body)
            else:
                self._buffered_gauges.setdefault(service, []).append(body)
        if t >= self._next_export:
            self._next_export = t + self.export_interval_s
            yield from self.flush(wall)

    def flush(self, now: float | None = None) -> Iterator[Message]:
        """Export what is buffered: per service one logs request and one metrics request (more
        when a service has over ``max_records`` records), the histogram points stamped ``now``."""
        time_ns = nanos(time.time() if now is None else now)
        logs, self._buffered_logs = self._buffered_logs, {}
        touched, self._touched = self._touched, {}
        gauges, self._buffered_gauges = self._buffered_gauges, {}
        for service, lines in logs.items():
            for chunk in _chunks(lines, self.max_records):
                self.records["logs"] += len(chunk)
                yield "logs", service.encode(), self._encode(_logs_request(service, chunk))
        for service in dict.fromkeys([*touched, *gauges]):
            points: list[_Point] = [
                (host, LATENCY_METRIC, self.histograms[service, host, path].point(path, time_ns))
                for host, path in sorted(touched.get(service, ()))
            ]
            points += _gauge_points(gauges.get(service, []))
            for part in _chunks(points, self.max_records):
                self.records["metrics"] += len(part)
                yield "metrics", service.encode(), self._encode(_metrics_request(service, part))

    def _observe(self, service: str, sample: dict[str, Any]) -> None:
        """Add a latency sample to its series (created on its first sample)."""
        host, path = sample["host"], sample["labels"]["path"]
        running = self.histograms.get((service, host, path))
        if running is None:
            assert self.started_ns is not None
            running = self.histograms[service, host, path] = RunningHistogram(self.started_ns)
        running.observe(float(sample["value"]))
        self._touched.setdefault(service, set()).add((host, path))

    def _encode(self, request: ExportLogsServiceRequest | ExportMetricsServiceRequest) -> bytes:
        if self.encoding == "otlp-json":
            return otlp_json(request)
        return request.SerializeToString()


def make_traffic(
    fmt: Format,
    plan: Scenario,
    services: tuple[str, ...] = SERVICES,
    seed: int | None = None,
    **options: Any,
) -> Traffic:
    """The simulator's traffic in one of FORMATS (``json``: the plain ``Traffic``); ``options``
    are OtlpTraffic's (``max_records``, ``export_interval_s``), ignored for JSON."""
    if fmt == "json":
        return Traffic(plan, services, seed)
    return OtlpTraffic(plan, services, seed, encoding=fmt, **options)


def flush(traffic: Traffic, now: float | None = None) -> Iterator[Message]:
    """What ``traffic`` still holds at the end of a run (OTLP buffers between exports)."""
    if isinstance(traffic, OtlpTraffic):
        yield from traffic.flush(now)


def records_of(traffic: Traffic, produced: Counter[str]) -> Counter[str]:
    """Records per kind carried by the messages ``produced`` counts: as many as messages for
    JSON, what ``OtlpTraffic.records`` counted for OTLP."""
    return traffic.records if isinstance(traffic, OtlpTraffic) else Counter(produced)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _logs_request(service: str, lines: Sequence[dict[str, Any]]) -> ExportLogsServiceRequest:
    """One request for one service's log lines: a ResourceLogs per host, in first-seen order."""
    by_host: dict[str, list[LogRecord]] = {}
    for line in lines:
        time_ns = nanos(line["ts"])
        trace_id, span_id = trace_ids(line["request_id"])
        level = line["level"]
        by_host.setdefault(line["host"], []).append(
            LogRecord(
                time_unix_nano=time_ns,
                observed_time_unix_nano=time_ns,
                severity_number=SEVERITY[level],  # type: ignore[arg-type]
                severity_text=level.upper(),
                body=AnyValue(string_value=line["msg"]),
                attributes=attributes({"request_id": line["request_id"]}),
                trace_id=trace_id,
                span_id=span_id,
            )
        )
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=resource(service, host),
                scope_logs=[ScopeLogs(scope=SCOPE, log_records=records)],
            )
            for host, records in by_host.items()
        ]
    )


def _gauge_points(readings: list[dict[str, Any]]) -> list[_Point]:
    """A host's CPU and memory readings as gauge data points."""
    return [
        (
            reading["host"],
            reading["name"],
            NumberDataPoint(time_unix_nano=nanos(reading["ts"]), as_double=reading["value"]),
        )
        for reading in readings
    ]


def _metric(name: str, points: list[HistogramDataPoint | NumberDataPoint]) -> Metric:
    if name == LATENCY_METRIC:
        return Metric(
            name=name,
            unit="ms",
            histogram=Histogram(
                data_points=points,  # type: ignore[arg-type]
                aggregation_temporality=AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE,
            ),
        )
    return Metric(name=name, unit="%", gauge=Gauge(data_points=points))  # type: ignore[arg-type]


def _metrics_request(service: str, points: Sequence[_Point]) -> ExportMetricsServiceRequest:
    """One request for one service's data points: a ResourceMetrics per host, a Metric per
    name holding that host's points of it, in first-seen order."""
    by_host: dict[str, dict[str, list[HistogramDataPoint | NumberDataPoint]]] = {}
    for host, name, point in points:
        by_host.setdefault(host, {}).setdefault(name, []).append(point)
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=resource(service, host),
                scope_metrics=[
                    ScopeMetrics(
                        scope=SCOPE,
                        metrics=[_metric(name, pts) for name, pts in metrics.items()],
                    )
                ],
            )
            for host, metrics in by_host.items()
        ]
    )
