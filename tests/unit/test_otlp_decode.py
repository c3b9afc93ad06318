"""rtmh.ingest.otlp: OTLP logs and metrics requests, built with the official classes and encoded
both ways (protobuf, OTLP JSON as the Collector writes it), decoded into exact records."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    ExponentialHistogram,
    ExponentialHistogramDataPoint,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
    Summary,
    SummaryDataPoint,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from rtmh.ingest.otlp import SERVICE_ATTRIBUTES, decode_otlp
from rtmh.otlp_traffic import otlp_json
from rtmh.records import (
    CumulativeSample,
    Decoded,
    DecodedRecord,
    HistogramSample,
    KafkaMessage,
    Kind,
    MetricSample,
    Rejected,
)

NOW = 1_714_564_800.0  # 2024-05-01T12:00:00Z
NOW_NS = 1_714_564_800 * 10**9
BROKER_MS = 1_714_564_790_000  # ten seconds earlier
DELTA, CUMULATIVE = 1, 2
ENCODINGS = ("protobuf", "json")

Request = ExportLogsServiceRequest | ExportMetricsServiceRequest


# --- building requests ------------------------------------------------------------------------


def kv(key: str, value: Any) -> KeyValue:
    return KeyValue(key=key, value=any_value(value))


def any_value(value: Any) -> AnyValue:
    if isinstance(value, AnyValue):
        return value
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    if isinstance(value, dict):
        return AnyValue(kvlist_value=KeyValueList(values=[kv(k, v) for k, v in value.items()]))
    return AnyValue(string_value=value)


def resource(**attributes: Any) -> Resource:
    return Resource(attributes=[kv(k.replace("_", "."), v) for k, v in attributes.items()])


def res(attributes: dict[str, Any]) -> Resource:
    return Resource(attributes=[kv(k, v) for k, v in attributes.items()])


SCOPE = InstrumentationScope(name="checkout-lib", version="1.2.0")
WEB = {"service.name": "web", "host.name": "node-1"}


def logs(*resources: tuple[dict[str, Any], list[LogRecord]]) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=res(attrs), scope_logs=[ScopeLogs(scope=SCOPE, log_records=records)]
            )
            for attrs, records in resources
        ]
    )


def metrics(*resources: tuple[dict[str, Any], list[Metric]]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=res(attrs), scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=items)]
            )
            for attrs, items in resources
        ]
    )


def encode(request: Request, encoding: str) -> bytes:
    return bytes(request.SerializeToString()) if encoding == "protobuf" else otlp_json(request)


def run(
    value: bytes, kind: Kind = Kind.LOGS, *, timestamp_ms: int | None = BROKER_MS, **options: Any
) -> list[Decoded] | None:
    msg = KafkaMessage("otlp_logs", 0, 7, None, value, timestamp_ms)
    params = {"max_bytes": 1_048_576, "now": NOW, "max_past_s": 86400.0, "max_future_s": 3600.0}
    params.update(options)
    return decode_otlp(msg, kind, **params)


def decoded(request: Request, encoding: str, kind: Kind = Kind.LOGS) -> list[Decoded]:
    out = run(encode(request, encoding), kind)
    assert out is not None
    return out


def records(request: Request, encoding: str, kind: Kind = Kind.LOGS) -> list[DecodedRecord]:
    out = decoded(request, encoding, kind)
    assert all(isinstance(item, DecodedRecord) for item in out), out
    return out  # type: ignore[return-value]


def both(request: Request, kind: Kind = Kind.LOGS) -> list[DecodedRecord]:
    """The records of a request, which must be the same from either encoding."""
    proto = records(request, "protobuf", kind)
    from_json = records(request, "json", kind)
    assert [strip(r) for r in proto] == [strip(r) for r in from_json]
    return proto


def strip(record: DecodedRecord) -> tuple[Any, ...]:
    return (
        record.kind,
        json.loads(record.data),
        record.event_time,
        record.service,
        record.host,
        record.level,
        record.is_error,
        record.samples,
        record.flags,
        record.index,
    )


def data(record: Decoded) -> dict[str, Any]:
    assert isinstance(record, DecodedRecord)
    parsed: dict[str, Any] = json.loads(record.data)
    return parsed


# --- recognising OTLP -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b'{"ts": 1, "service": "a"}',
        b'  {"service": "a"}',
        b'{"resource": "x", "service": "a"}',
        b"[1, 2]",
        b"hello",
        b"",
        b'{"service":"a","resourceLogs":[]}',
    ],
)
def test_anything_but_otlp_is_left_to_the_native_decoder(value: bytes) -> None:
    assert run(value) is None
    assert run(value, Kind.METRICS) is None


def test_events_topics_take_no_otlp() -> None:
    request = logs((WEB, [LogRecord(time_unix_nano=NOW_NS)]))
    for encoding in ENCODINGS:
        assert run(encode(request, encoding), Kind.EVENTS) is None


def test_json_with_a_leading_newline_is_json_not_protobuf() -> None:
    assert run(b'\n{"service": "a", "message": "x"}') is None
    request = logs((WEB, [LogRecord(time_unix_nano=NOW_NS)]))
    out = run(b"\n  " + otlp_json(request))
    assert out is not None and len(out) == 1 and isinstance(out[0], DecodedRecord)


def test_otlp_json_with_whitespace_before_its_key_is_recognised() -> None:
    request = logs((WEB, [LogRecord(time_unix_nano=NOW_NS)]))
    pretty = json.dumps(json.loads(otlp_json(request)), indent=2).encode()
    assert pretty.startswith(b'{\n  "resourceLogs"')
    out = run(pretty)
    assert out is not None and [r.service for r in out] == ["web"]  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_other_signal_is_refused_naming_both(encoding: str) -> None:
    log_request = logs((WEB, [LogRecord(time_unix_nano=NOW_NS)]))
    metric_request = metrics((WEB, [gauge("cpu", [point(0.5)])]))
    assert run(encode(metric_request, encoding), Kind.LOGS) == [
        Rejected(
            f"OTLP {name(encoding)} metrics request on a logs topic, which takes OTLP logs only"
        )
    ]
    assert run(encode(log_request, encoding), Kind.METRICS) == [
        Rejected(
            f"OTLP {name(encoding)} logs request on a metrics topic, which takes OTLP metrics only"
        )
    ]


def name(encoding: str) -> str:
    return "protobuf" if encoding == "protobuf" else "JSON"


def test_json_traces_are_refused() -> None:
    assert run(b'{"resourceSpans":[]}') == [
        Rejected("OTLP JSON traces request on a logs topic, which takes OTLP logs only")
    ]


def test_protobuf_garbage_is_one_rejection() -> None:
    out = run(b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert out is not None and len(out) == 1
    assert out[0].index is None  # type: ignore[union-attr]
    assert out[0].reason.startswith("not a valid OTLP protobuf logs request")  # type: ignore[union-attr]


def test_bad_otlp_json_is_one_rejection() -> None:
    out = run(b'{"resourceLogs": [{"scopeLogs": "no"}]}')
    assert out is not None and len(out) == 1 and isinstance(out[0], Rejected)
    assert out[0].reason.startswith("not valid OTLP JSON (logs): Expected `array`, got `str`")
    assert out[0].index is None and out[0].payload is None


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_message_over_the_size_limit_is_one_rejection(encoding: str) -> None:
    value = encode(logs((WEB, [LogRecord(time_unix_nano=NOW_NS)])), encoding)
    assert run(value, max_bytes=10) == [
        Rejected(f"message is {len(value)} bytes, over the 10-byte limit")
    ]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_an_empty_request_has_no_records(encoding: str) -> None:
    assert run(encode(ExportLogsServiceRequest(resource_logs=[ResourceLogs()]), encoding)) == []


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_starting_like_protobuf_never_raise(tail: bytes) -> None:
    value = b"\x0a" + tail
    for kind in (Kind.LOGS, Kind.METRICS):
        out = run(value, kind)
        if value.lstrip()[:1] == b"{":  # JSON after a newline: the native decoder's
            assert out is None or all(isinstance(item, Rejected) for item in out)
            continue
        assert isinstance(out, list)
        assert all(isinstance(item, DecodedRecord | Rejected) for item in out)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_bytes_after_a_valid_prefix_never_raise(tail: bytes) -> None:
    value = encode(logs((WEB, [LogRecord(time_unix_nano=NOW_NS)])), "protobuf")
    out = run(value + tail)
    assert isinstance(out, list)


# --- logs -------------------------------------------------------------------------------------


def test_a_log_record_maps_to_one_exact_record() -> None:
    record = LogRecord(
        time_unix_nano=NOW_NS - 5 * 10**9 + 123_456_789,
        observed_time_unix_nano=NOW_NS - 4 * 10**9,
        severity_number=17,
        severity_text="ERROR",
        body=any_value("payment failed"),
        attributes=[kv("http.route", "/pay"), kv("attempt", 3), kv("ok", False)],
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        event_name="payment.failed",
    )
    attrs = {"service.name": "payments", "host.name": "node-1", "k8s.namespace.name": "shop"}
    [out] = both(logs((attrs, [record])))
    assert (out.kind, out.service, out.host, out.level, out.is_error) == (
        Kind.LOGS,
        "payments",
        "node-1",
        "error",
        True,
    )
    assert (out.event_time, out.flags, out.index) == (NOW - 5 + 0.123457, (), 0)
    assert data(out) == {
        "otlp": "log",
        "ts": "2024-05-01T11:59:55.123457Z",
        "service": "payments",
        "host": "node-1",
        "level": "error",
        "msg": "payment failed",
        "severity_number": 17,
        "severity_text": "ERROR",
        "attributes": {"http.route": "/pay", "attempt": 3, "ok": False},
        "resource": attrs,
        "scope": {"name": "checkout-lib", "version": "1.2.0"},
        "trace_id": "000102030405060708090a0b0c0d0e0f",
        "span_id": "0001020304050607",
        "event_name": "payment.failed",
        "observed_ts": "2024-05-01T11:59:56Z",
    }


def test_structured_bodies_and_attribute_values_become_plain_json() -> None:
    body = {"user": {"id": 7, "tags": ["a", 1.5]}, "raw": b"\x00\x01", "none": AnyValue()}
    record = LogRecord(
        time_unix_nano=NOW_NS,
        body=any_value(body),
        attributes=[kv("nan", math.nan), kv("inf", -math.inf), kv("big", 2**62)],
    )
    [out] = both(logs((WEB, [record])))
    assert data(out)["msg"] == {
        "user": {"id": 7, "tags": ["a", 1.5]},
        "raw": "AAE=",
        "none": None,
    }
    assert data(out)["attributes"] == {"nan": "NaN", "inf": "-Infinity", "big": 2**62}
    assert data(out)["level"] is None and "severity_number" not in data(out)


@pytest.mark.parametrize(
    ("number", "text", "level", "flags"),
    [
        (1, "", "trace", ()),
        (4, "", "trace", ()),
        (5, "", "debug", ()),
        (9, "", "info", ()),
        (12, "WARN", "info", ()),  # the number wins
        (13, "", "warn", ()),
        (17, "", "error", ()),
        (20, "", "error", ()),
        (21, "", "fatal", ()),
        (24, "", "fatal", ()),
        (0, "Warning", "warn", ()),
        (0, "CRITICAL", "fatal", ()),
        (0, "loud", None, ("level_unrecognised",)),
        (30, "", None, ("level_unrecognised",)),
        (0, "", None, ()),
    ],
)
def test_levels(number: int, text: str, level: str | None, flags: tuple[str, ...]) -> None:
    record = LogRecord(time_unix_nano=NOW_NS, severity_number=number, severity_text=text)  # type: ignore[arg-type]
    [out] = both(logs((WEB, [record])))
    assert (out.level, out.flags, out.is_error) == (level, flags, level in ("error", "fatal"))
    assert data(out)["level"] == level


def test_event_time_falls_back_from_time_to_observed_to_broker_to_now() -> None:
    observed = LogRecord(observed_time_unix_nano=NOW_NS - 2 * 10**9)
    neither = LogRecord()
    out = both(logs((WEB, [observed, neither])))
    assert [(r.event_time, r.flags) for r in out] == [(NOW - 2, ()), (BROKER_MS / 1000, ())]
    assert data(out[1])["ts"] == "2024-05-01T11:59:50Z"
    value = encode(logs((WEB, [neither])), "protobuf")
    [now] = run(value, timestamp_ms=None) or []
    assert isinstance(now, DecodedRecord) and now.event_time == NOW


def test_a_time_out_of_range_gets_the_broker_time_and_the_flag() -> None:
    far = NOW_NS + 7200 * 10**9
    out = both(logs((WEB, [LogRecord(time_unix_nano=far), LogRecord(time_unix_nano=1)])))
    for record in out:
        assert (record.event_time, record.flags) == (BROKER_MS / 1000, ("ts_out_of_range",))
        assert not record.windowed
    assert data(out[0])["time_unix_nano"] == far
    assert data(out[1])["time_unix_nano"] == 1


@pytest.mark.parametrize(
    ("attributes", "service"),
    [
        ({"service.name": "api", "k8s.deployment.name": "dep"}, "api"),
        ({"service.name": "unknown_service", "k8s.deployment.name": "dep"}, "dep"),
        ({"service.name": "unknown_service:java", "k8s.pod.name": "web-0"}, "web"),
        ({"service.name": "  ", "k8s.statefulset.name": "db"}, "db"),
        (
            {"k8s.pod.labels.app.kubernetes.io/name": "shop", "k8s.pod.labels.app": "x"},
            "shop",
        ),
        ({"k8s.pod.labels.app": "legacy", "k8s.deployment.name": "dep"}, "legacy"),
        ({"k8s.deployment.name": "dep", "k8s.container.name": "c"}, "dep"),
        ({"k8s.statefulset.name": "db", "k8s.daemonset.name": "ds"}, "db"),
        ({"k8s.daemonset.name": "ds", "k8s.cronjob.name": "cj"}, "ds"),
        ({"k8s.cronjob.name": "cj", "k8s.job.name": "cj-28990"}, "cj"),
        ({"k8s.job.name": "migrate", "k8s.container.name": "c"}, "migrate"),
        ({"k8s.container.name": "c", "k8s.pod.name": "p-7d9f8c6b5-x2x9z"}, "c"),
        ({"k8s.pod.name": "checkout-7d9f8c6b5-x2x9z"}, "checkout"),
        ({"service.name": 42, "k8s.job.name": "j"}, "j"),
    ],
)
def test_service_from_resource_attributes_in_order(
    attributes: dict[str, Any], service: str
) -> None:
    [out] = both(logs((attributes, [LogRecord(time_unix_nano=NOW_NS)])))
    assert out.service == service


def test_the_service_order_is_one_documented_tuple() -> None:
    assert SERVICE_ATTRIBUTES == (
        "service.name",
        "k8s.pod.labels.app.kubernetes.io/name",
        "k8s.pod.labels.app",
        "k8s.deployment.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.cronjob.name",
        "k8s.job.name",
        "k8s.container.name",
        "k8s.pod.name",
    )


def test_host_from_host_name_then_node_name() -> None:
    request = logs(
        ({"service.name": "a", "k8s.node.name": "n1"}, [LogRecord()]),
        ({"service.name": "a", "k8s.node.name": "n1", "host.name": "h"}, [LogRecord()]),
        ({"service.name": "a"}, [LogRecord()]),
    )
    assert [r.host for r in both(request)] == ["n1", "h", None]


NO_SERVICE = (
    "no service: resource has no service.name or Kubernetes name attribute (service.name, "
    "k8s.pod.labels.app.kubernetes.io/name, k8s.pod.labels.app, k8s.deployment.name, ..., "
    "k8s.pod.name) and the record no service.name attribute"
)


def decode_payload(payload: bytes | None, encoding: str, kind: Kind) -> Request:
    """A dead letter's payload read back with the official classes."""
    assert payload is not None
    cls = ExportLogsServiceRequest if kind is Kind.LOGS else ExportMetricsServiceRequest
    if encoding == "protobuf":
        return cls.FromString(payload)
    # OTLP JSON back to protobuf: the ids are hex, json_format wants base64
    doc = json.loads(payload)
    return _from_otlp_json(doc, cls)


def _from_otlp_json(doc: dict[str, Any], cls: type[Request]) -> Request:
    import base64

    from google.protobuf import json_format

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: base64.b64encode(bytes.fromhex(v)).decode()
                if k in ("traceId", "spanId")
                else fix(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    return json_format.ParseDict(fix(doc), cls())


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_records_without_a_service_are_refused_alone_and_cut_out(encoding: str) -> None:
    good = LogRecord(time_unix_nano=NOW_NS, body=any_value("ok"))
    lost = LogRecord(time_unix_nano=NOW_NS - 10**9, body=any_value("which service?"))
    own = LogRecord(time_unix_nano=NOW_NS, attributes=[kv("service.name", "mine")])
    nameless = {"host.name": "node-9", "service.name": "unknown_service:python"}
    request = logs((WEB, [good]), (nameless, [lost, own]), (WEB, [good]))
    out = decoded(request, encoding)
    assert [type(r).__name__ for r in out] == [
        "DecodedRecord",
        "Rejected",
        "DecodedRecord",
        "DecodedRecord",
    ]
    assert [r.index for r in out] == [0, 1, 2, 3]
    assert [r.service for r in out if isinstance(r, DecodedRecord)] == ["web", "mine", "web"]
    rejected = out[1]
    assert isinstance(rejected, Rejected) and rejected.reason == NO_SERVICE
    replay = decode_payload(rejected.payload, encoding, Kind.LOGS)
    expected = logs((nameless, [lost]))
    assert replay == expected
    # replaying the dead letter gives that record again (and the same refusal)
    again = run(bytes(rejected.payload or b""))
    assert again is not None and [(r.reason, r.index) for r in again] == [(NO_SERVICE, 0)]  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_too_long_service_name_is_refused_in_the_native_words(encoding: str) -> None:
    request = logs(({"service.name": "s" * 201}, [LogRecord(), LogRecord()]))
    out = decoded(request, encoding)
    reason = "field 'resource.attributes.service.name' is 201 characters, over the 200 limit"
    assert [(r.reason, r.index) for r in out] == [(reason, 0), (reason, 1)]  # type: ignore[union-attr]
    assert all(isinstance(r, Rejected) and r.payload for r in out)


def test_nul_characters_are_replaced_and_flagged() -> None:
    record = LogRecord(time_unix_nano=NOW_NS, body=any_value("a\x00b"))
    [out] = both(logs(({"service.name": "we\x00b"}, [record])))
    assert out.service == "we\ufffdb"
    assert data(out)["msg"] == "a\ufffdb"
    assert out.flags == ("nul_replaced",)
    assert "\\u0000" not in out.data


def test_records_are_indexed_in_document_order_across_resources_and_scopes() -> None:
    request = ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(
                resource=res(WEB),
                scope_logs=[
                    ScopeLogs(log_records=[LogRecord(body=any_value(f"{i}{j}")) for j in range(2)])
                    for i in range(2)
                ],
            ),
            ResourceLogs(
                resource=res(WEB),
                scope_logs=[ScopeLogs(log_records=[LogRecord(body=any_value("20"))])],
            ),
        ]
    )
    out = both(request)
    assert [(r.index, data(r)["msg"]) for r in out] == [
        (0, "00"),
        (1, "01"),
        (2, "10"),
        (3, "11"),
        (4, "20"),
    ]
    assert "scope" not in data(out[0])


# --- metrics ----------------------------------------------------------------------------------


def point(value: float | int, *, at: int = NOW_NS, start: int = 0, **attrs: Any) -> NumberDataPoint:
    p = NumberDataPoint(
        time_unix_nano=at,
        start_time_unix_nano=start,
        attributes=[kv(k, v) for k, v in attrs.items()],
    )
    if isinstance(value, int):
        p.as_int = value
    else:
        p.as_double = value
    return p


def gauge(metric: str, points: list[NumberDataPoint]) -> Metric:
    return Metric(name=metric, unit="1", gauge=Gauge(data_points=points))


def counter(
    metric: str,
    points: list[NumberDataPoint],
    temporality: int = CUMULATIVE,
    monotonic: bool = True,
) -> Metric:
    return Metric(
        name=metric,
        sum=Sum(data_points=points, aggregation_temporality=temporality, is_monotonic=monotonic),  # type: ignore[arg-type]
    )


def test_a_gauge_point_is_a_metric_sample() -> None:
    request = metrics((WEB, [gauge("cpu", [point(0.25, path="/a"), point(3, path="/b")])]))
    out = both(request, Kind.METRICS)
    assert [(r.kind, r.service, r.host, r.samples, r.index) for r in out] == [
        (Kind.METRICS, "web", "node-1", (MetricSample("cpu", 0.25),), 0),
        (Kind.METRICS, "web", "node-1", (MetricSample("cpu", 3.0),), 1),
    ]
    assert out[0].event_time == NOW
    assert data(out[0]) == {
        "otlp": "metric",
        "ts": "2024-05-01T12:00:00Z",
        "service": "web",
        "host": "node-1",
        "name": "cpu",
        "unit": "1",
        "type": "gauge",
        "resource": WEB,
        "scope": {"name": "checkout-lib", "version": "1.2.0"},
        "attributes": {"path": "/a"},
        "value": 0.25,
    }
    assert data(out[1])["value"] == 3


def test_delta_sums_are_increments_and_up_down_counters_levels() -> None:
    request = metrics(
        (
            WEB,
            [
                counter("requests", [point(5.0)], DELTA),
                counter("queue", [point(-3.0)], CUMULATIVE, monotonic=False),
            ],
        )
    )
    out = both(request, Kind.METRICS)
    assert [r.samples for r in out] == [
        (MetricSample("requests", 5.0),),
        (MetricSample("queue", -3.0),),
    ]
    assert (data(out[0])["temporality"], data(out[0])["monotonic"]) == ("delta", True)
    assert (data(out[1])["temporality"], data(out[1])["monotonic"]) == ("cumulative", False)


def test_cumulative_sums_are_cumulative_samples_of_a_stable_series() -> None:
    start = NOW_NS - 60 * 10**9

    def message(value: float, at: int, path: str) -> DecodedRecord:
        p = point(value, at=at, start=start, path=path, code=200)
        [out] = both(metrics((WEB, [counter("requests", [p])])), Kind.METRICS)
        return out

    first = message(10.0, NOW_NS - 10**9, "/a")
    second = message(12.0, NOW_NS, "/a")
    other = message(1.0, NOW_NS, "/b")
    [one] = first.samples
    [two] = second.samples
    [three] = other.samples
    assert isinstance(one, CumulativeSample) and isinstance(two, CumulativeSample)
    assert one == CumulativeSample("requests", one.series, start, NOW_NS - 10**9, value=10.0)
    assert two == CumulativeSample("requests", one.series, start, NOW_NS, value=12.0)
    assert isinstance(three, CumulativeSample) and three.series != one.series
    assert json.loads(one.series) == [
        [["host.name", "node-1"], ["service.name", "web"]],
        "checkout-lib",
        "requests",
        [["code", 200], ["path", "/a"]],
    ]
    assert data(first)["start_ts"] == "2024-05-01T11:59:00Z"


def test_the_series_does_not_depend_on_attribute_order() -> None:
    a = point(1.0, x="1", y="2")
    b = NumberDataPoint(
        time_unix_nano=NOW_NS, as_double=1.0, attributes=[kv("y", "2"), kv("x", "1")]
    )
    out = both(metrics((WEB, [counter("c", [a, b])])), Kind.METRICS)
    assert out[0].samples[0].series == out[1].samples[0].series  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "flag"),
    [(math.nan, "value_not_finite"), (math.inf, "value_not_finite"), (1e301, "value_too_large")],
)
def test_unusable_values_are_stored_without_samples(value: float, flag: str) -> None:
    [out] = both(metrics((WEB, [gauge("cpu", [point(value)])])), Kind.METRICS)
    assert (out.samples, out.flags) == ((), (flag,))
    assert data(out)["value"] == (
        "NaN" if math.isnan(value) else "Infinity" if math.isinf(value) else value
    )


def test_no_recorded_value_and_missing_values_give_no_sample() -> None:
    flagged = point(1.0)
    flagged.flags = 1
    empty = NumberDataPoint(time_unix_nano=NOW_NS)
    out = both(metrics((WEB, [gauge("cpu", [flagged, empty])])), Kind.METRICS)
    assert [(r.samples, r.flags) for r in out] == [
        ((), ("no_recorded_value",)),
        ((), ("value_missing",)),
    ]
    assert data(out[0])["no_recorded_value"] is True


def test_unspecified_temporality_gives_no_sample() -> None:
    [out] = both(metrics((WEB, [counter("c", [point(1.0)], 0)])), Kind.METRICS)
    assert (out.samples, out.flags, data(out)["temporality"]) == (
        (),
        ("temporality_unspecified",),
        "unspecified",
    )


BOUNDS = [10.0, 20.0, 50.0]


def histogram(
    counts: list[int], temporality: int, *, low: float | None = None, high: float | None = None
) -> Metric:
    p = HistogramDataPoint(
        time_unix_nano=NOW_NS,
        start_time_unix_nano=NOW_NS - 10**10,
        count=sum(counts),
        sum=123.0,
        bucket_counts=counts,
        explicit_bounds=BOUNDS,
    )
    if low is not None:
        p.min = low
    if high is not None:
        p.max = high
    return Metric(
        name="latency",
        unit="ms",
        histogram=Histogram(data_points=[p], aggregation_temporality=temporality),  # type: ignore[arg-type]
    )


def test_delta_histogram_buckets_stand_for_midpoints_and_the_extremes() -> None:
    [out] = both(metrics((WEB, [histogram([1, 2, 0, 4], DELTA, low=2.0, high=80.0)])), Kind.METRICS)
    assert out.samples == (
        HistogramSample("latency", 7, 123.0, 2.0, 80.0, ((2.0, 1), (15.0, 2), (80.0, 4))),
    )
    assert {
        k: data(out)[k] for k in ("count", "sum", "min", "max", "bucket_counts", "explicit_bounds")
    } == {
        "count": 7,
        "sum": 123.0,
        "min": 2.0,
        "max": 80.0,
        "bucket_counts": [1, 2, 0, 4],
        "explicit_bounds": BOUNDS,
    }


def test_histogram_extreme_buckets_without_min_max_stand_for_their_bound() -> None:
    [out] = both(metrics((WEB, [histogram([1, 0, 1, 1], DELTA)])), Kind.METRICS)
    assert out.samples == (
        HistogramSample("latency", 3, 123.0, None, None, ((10.0, 1), (35.0, 1), (50.0, 1))),
    )


def test_a_cumulative_histogram_is_a_cumulative_sample_without_min_max() -> None:
    [out] = both(
        metrics((WEB, [histogram([1, 2, 0, 4], CUMULATIVE, low=2.0, high=80.0)])), Kind.METRICS
    )
    [sample] = out.samples
    assert isinstance(sample, CumulativeSample)
    assert sample.histogram == HistogramSample(
        "latency", 7, 123.0, None, None, ((2.0, 1), (15.0, 2), (80.0, 4))
    )
    assert (sample.start_ns, sample.time_ns, sample.value) == (NOW_NS - 10**10, NOW_NS, None)


def test_exponential_histograms_with_negative_buckets_and_zeros() -> None:
    p = ExponentialHistogramDataPoint(
        time_unix_nano=NOW_NS,
        count=8,
        sum=10.0,
        scale=1,
        zero_count=2,
        positive=ExponentialHistogramDataPoint.Buckets(offset=2, bucket_counts=[3, 0, 1]),
        negative=ExponentialHistogramDataPoint.Buckets(offset=-1, bucket_counts=[2]),
    )
    metric = Metric(
        name="size",
        exponential_histogram=ExponentialHistogram(data_points=[p], aggregation_temporality=DELTA),  # type: ignore[arg-type]
    )
    [out] = both(metrics((WEB, [metric])), Kind.METRICS)
    [sample] = out.samples
    assert isinstance(sample, HistogramSample)
    base = 2**0.5  # scale 1
    expected = ((-(base**-0.5), 2), (0.0, 2), (base**2.5, 3), (base**4.5, 1))
    assert (sample.count, sample.sum, sample.min, sample.max) == (8, 10.0, None, None)
    assert [v for v, _ in sample.buckets] == pytest.approx([v for v, _ in expected])
    assert [c for _, c in sample.buckets] == [c for _, c in expected]
    assert {k: data(out)[k] for k in ("scale", "zero_count", "positive", "negative")} == {
        "scale": 1,
        "zero_count": 2,
        "positive": {"offset": 2, "bucket_counts": [3, 0, 1]},
        "negative": {"offset": -1, "bucket_counts": [2]},
    }


def test_a_summary_is_stored_without_samples() -> None:
    p = SummaryDataPoint(
        time_unix_nano=NOW_NS,
        count=3,
        sum=6.0,
        quantile_values=[SummaryDataPoint.ValueAtQuantile(quantile=0.5, value=2.0)],
    )
    [out] = both(
        metrics((WEB, [Metric(name="rt", summary=Summary(data_points=[p]))])), Kind.METRICS
    )
    assert (out.samples, out.flags) == ((), ())
    assert (data(out)["type"], data(out)["quantile_values"]) == (
        "summary",
        [{"quantile": 0.5, "value": 2.0}],
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_bad_metric_is_refused_point_by_point_and_its_siblings_kept(encoding: str) -> None:
    long_name = "m" * 201
    bad_histogram = HistogramDataPoint(
        time_unix_nano=NOW_NS, count=1, bucket_counts=[1, 0], explicit_bounds=[1.0, 2.0]
    )
    request = metrics(
        (
            WEB,
            [
                gauge("ok", [point(1.0)]),
                gauge(long_name, [point(2.0, k="a"), point(3.0, k="b")]),
                Metric(
                    name="h",
                    histogram=Histogram(data_points=[bad_histogram], aggregation_temporality=DELTA),
                ),  # type: ignore[arg-type]
                gauge("ok", [point(4.0)]),
            ],
        )
    )
    out = decoded(request, encoding, Kind.METRICS)
    assert [r.index for r in out] == [0, 1, 2, 3, 4]
    assert [type(r).__name__ for r in out] == [
        "DecodedRecord",
        "Rejected",
        "Rejected",
        "Rejected",
        "DecodedRecord",
    ]
    long_reason = "field 'metric.name' is 201 characters, over the 200 limit"
    assert [r.reason for r in out[1:4]] == [  # type: ignore[union-attr]
        long_reason,
        long_reason,
        "histogram point has 2 bucket counts for 2 explicit bounds (expected 3)",
    ]
    replay = decode_payload(out[2].payload, encoding, Kind.METRICS)  # type: ignore[union-attr]
    assert replay == metrics((WEB, [gauge(long_name, [point(3.0, k="b")])]))
    replay = decode_payload(out[3].payload, encoding, Kind.METRICS)  # type: ignore[union-attr]
    assert replay == metrics(
        (
            WEB,
            [
                Metric(
                    name="h",
                    histogram=Histogram(data_points=[bad_histogram], aggregation_temporality=DELTA),
                )
            ],
        )  # type: ignore[arg-type]
    )


def test_a_bad_exponential_scale_is_refused() -> None:
    p = ExponentialHistogramDataPoint(time_unix_nano=NOW_NS, count=1, scale=21, zero_count=1)
    metric = Metric(
        name="e",
        exponential_histogram=ExponentialHistogram(data_points=[p], aggregation_temporality=DELTA),
    )  # type: ignore[arg-type]
    out = decoded(metrics((WEB, [metric])), "protobuf", Kind.METRICS)
    assert [r.reason for r in out] == ["exponential histogram scale 21 is outside -10..20"]  # type: ignore[union-attr]


OTLP_KEYS = [
    "resourceLogs",
    "resourceMetrics",
    "resource",
    "attributes",
    "scopeLogs",
    "scopeMetrics",
    "scope",
    "logRecords",
    "metrics",
    "key",
    "value",
    "stringValue",
    "intValue",
    "doubleValue",
    "boolValue",
    "arrayValue",
    "kvlistValue",
    "bytesValue",
    "values",
    "timeUnixNano",
    "observedTimeUnixNano",
    "severityNumber",
    "severityText",
    "body",
    "traceId",
    "spanId",
    "name",
    "gauge",
    "sum",
    "histogram",
    "exponentialHistogram",
    "summary",
    "dataPoints",
    "asDouble",
    "asInt",
    "startTimeUnixNano",
    "count",
    "bucketCounts",
    "explicitBounds",
    "min",
    "max",
    "scale",
    "zeroCount",
    "positive",
    "negative",
    "offset",
    "aggregationTemporality",
    "isMonotonic",
    "flags",
    "quantileValues",
    "quantile",
]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["NaN", "Infinity", "-1", "1700000000000000000", "service.name", "\x00"])
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(OTLP_KEYS), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["resourceLogs", "resourceMetrics"]), JSON_VALUES)
def test_any_json_under_an_otlp_key_never_raises(key: str, value: Any) -> None:
    raw = json.dumps({key: value}).encode()
    for kind in (Kind.LOGS, Kind.METRICS):
        out = run(raw, kind)
        assert isinstance(out, list)
        for item in out:
            assert isinstance(item, DecodedRecord | Rejected)
            if isinstance(item, DecodedRecord):
                assert "\\u0000" not in item.data
                json.loads(item.data)


NANOS = st.integers(min_value=0, max_value=2**64 - 1) | st.sampled_from([0, NOW_NS, str(NOW_NS)])
DOUBLES = st.floats().map(
    lambda f: f if math.isfinite(f) else str(f).replace("inf", "Infinity").replace("nan", "NaN")
)
ANY_VALUES = st.recursive(
    st.fixed_dictionaries({"stringValue": st.text(max_size=8)})
    | st.fixed_dictionaries({"intValue": st.integers(-(2**63), 2**63 - 1)})
    | st.fixed_dictionaries({"doubleValue": DOUBLES})
    | st.fixed_dictionaries({"boolValue": st.booleans()})
    | st.fixed_dictionaries({"bytesValue": st.just("AAE=")})
    | st.just({}),
    lambda inner: (
        st.fixed_dictionaries(
            {"arrayValue": st.fixed_dictionaries({"values": st.lists(inner, max_size=3)})}
        )
        | st.fixed_dictionaries(
            {
                "kvlistValue": st.fixed_dictionaries(
                    {
                        "values": st.lists(
                            st.fixed_dictionaries({"key": st.text(max_size=4), "value": inner}),
                            max_size=3,
                        )
                    }
                )
            }
        )
    ),
    max_leaves=8,
)
ATTRIBUTES = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["service.name", "k8s.pod.name", "host.name", "x", "\x00"]),
            "value": ANY_VALUES,
        }
    ),
    max_size=4,
)
LOG_RECORDS = st.fixed_dictionaries(
    {},
    optional={
        "timeUnixNano": NANOS,
        "observedTimeUnixNano": NANOS,
        "severityNumber": st.integers(-5, 40),
        "severityText": st.text(max_size=6),
        "body": ANY_VALUES,
        "attributes": ATTRIBUTES,
        "traceId": st.text("0123456789abcdefABCDEF", max_size=32),
        "eventName": st.text(max_size=4),
    },
)
POINT_FIELDS = {
    "attributes": ATTRIBUTES,
    "timeUnixNano": NANOS,
    "startTimeUnixNano": NANOS,
    "asDouble": DOUBLES,
    "asInt": st.integers(-(2**63), 2**63 - 1),
    "flags": st.integers(0, 3),
    "count": st.integers(0, 2**64 - 1),
    "sum": DOUBLES,
    "min": DOUBLES,
    "max": DOUBLES,
    "bucketCounts": st.lists(st.integers(0, 2**64 - 1), max_size=5),
    "explicitBounds": st.lists(DOUBLES, max_size=4),
    "scale": st.integers(-12, 22),
    "zeroCount": st.integers(0, 10),
    "positive": st.fixed_dictionaries(
        {
            "offset": st.integers(-(2**31), 2**31 - 1),
            "bucketCounts": st.lists(st.integers(0, 9), max_size=4),
        }
    ),
    "negative": st.fixed_dictionaries(
        {"offset": st.integers(-300, 300), "bucketCounts": st.lists(st.integers(0, 9), max_size=4)}
    ),
    "quantileValues": st.lists(
        st.fixed_dictionaries({"quantile": DOUBLES, "value": DOUBLES}), max_size=2
    ),
}
METRICS = st.builds(
    lambda name, kind, points, temporality, monotonic: {
        "name": name,
        kind: {
            "dataPoints": points,
            "aggregationTemporality": temporality,
            "isMonotonic": monotonic,
        },
    },
    st.sampled_from(["m", "", "x" * 201, "a\x00b"]),
    st.sampled_from(["gauge", "sum", "histogram", "exponentialHistogram", "summary"]),
    st.lists(st.fixed_dictionaries({}, optional=POINT_FIELDS), max_size=3),
    st.integers(0, 3),
    st.booleans(),
)


def _resources(key: str, scopes_key: str, items_key: str, items: Any) -> Any:
    scope = st.fixed_dictionaries({items_key: st.lists(items, max_size=3)})
    # mostly a usable service.name, after (so winning over) any random one
    named = st.sampled_from(["web"] * 6 + ["unknown_service", " ", "s" * 201, "we\x00b"]).map(
        lambda name: [{"key": "service.name", "value": {"stringValue": name}}]
    )
    attributes = st.builds(lambda random, service: random + service, ATTRIBUTES, named)
    resource = st.fixed_dictionaries(
        {
            "resource": st.fixed_dictionaries({"attributes": attributes}),
            scopes_key: st.lists(scope, max_size=2),
        }
    )
    return st.fixed_dictionaries({key: st.lists(resource, max_size=2)})


@settings(max_examples=300, deadline=None)
@given(
    _resources("resourceLogs", "scopeLogs", "logRecords", LOG_RECORDS)
    | _resources("resourceMetrics", "scopeMetrics", "metrics", METRICS)
)
def test_any_otlp_shaped_json_never_raises_and_cut_payloads_replay(doc: dict[str, Any]) -> None:
    kind = Kind.LOGS if "resourceLogs" in doc else Kind.METRICS
    out = run(json.dumps(doc).encode(), kind)
    assert isinstance(out, list)
    for i, item in enumerate(out):
        assert item.index == i
        if isinstance(item, DecodedRecord):
            assert "\\u0000" not in item.data and "\x00" not in item.service
            json.loads(item.data)
        else:
            assert isinstance(item, Rejected) and item.payload is not None
            replay = run(item.payload, kind)
            assert replay is not None and [r.reason for r in replay] == [item.reason]  # type: ignore[union-attr]
