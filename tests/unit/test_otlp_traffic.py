"""`rtmh simulate --format otlp-*`: the OTLP messages parse back, with the official classes, into
the log lines, samples and gauges the simulator meant (the plain ``Traffic`` of the same seed is
the reference), and the JSON form is OTLP JSON as the Collector writes it."""

from __future__ import annotations

import base64
import bisect
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

from rtmh.otlp_traffic import (
    LATENCY_BOUNDS,
    LATENCY_METRIC,
    OtlpTraffic,
    flush,
    make_traffic,
    records_of,
    trace_ids,
)
from rtmh.simulate import Message, Scenario, Traffic, scenario

T0 = 1_800_000_000.0
TICKS = 30


def run(traffic: Traffic, plan_requests: int = 120) -> list[Message]:
    """Thirty ticks of 0.1 s (gauges on the first tick of each second)."""
    out: list[Message] = []
    for i in range(TICKS):
        out += traffic.messages(i * 0.1, plan_requests, now=T0 + i * 0.1)
    return out


def native(seed: int, plan: Scenario | None = None) -> list[dict[str, Any]]:
    messages = run(Traffic(plan or scenario("steady", 60), seed=seed))
    return [{"kind": k, **msgspec.json.decode(v)} for k, _, v in messages]


def attrs(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def log_lines(messages: list[Message]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """(message key, line) for every log record, the line rebuilt from OTLP alone."""
    for kind, key, value in messages:
        if kind != "logs":
            continue
        request = ExportLogsServiceRequest.FromString(value)
        for rl in request.resource_logs:
            res = attrs(rl.resource.attributes)
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    yield (
                        key,
                        {
                            "ts": rec.time_unix_nano / 1e9,
                            "observed": rec.observed_time_unix_nano / 1e9,
                            "service": res["service.name"],
                            "host": res["host.name"],
                            "level": rec.severity_text.lower(),
                            "severity": rec.severity_number,
                            "msg": rec.body.string_value,
                            "request_id": attrs(rec.attributes)["request_id"],
                            "ids": (rec.trace_id, rec.span_id),
                            "k8s": {k: v for k, v in res.items() if k.startswith("k8s.")},
                        },
                    )


def metric_points(messages: list[Message]) -> Iterator[tuple[str, str, Any, Any]]:
    """(service, host, metric, point) for every data point."""
    for kind, _, value in messages:
        if kind != "metrics":
            continue
        request = ExportMetricsServiceRequest.FromString(value)
        for rm in request.resource_metrics:
            res = attrs(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    which = metric.WhichOneof("data")
                    points = getattr(metric, which).data_points
                    for point in points:
                        yield res["service.name"], res["host.name"], metric, point


def test_log_records_are_the_simulators_lines() -> None:
    reference = [
        {k: v for k, v in line.items() if k != "kind"}
        for line in native(7)
        if line["kind"] == "logs"
    ]
    messages = run(OtlpTraffic(scenario("steady", 60), seed=7))
    got = list(log_lines(messages))
    assert len(got) == len(reference) > 1000
    assert all(key == line["service"].encode() for key, line in got)  # keyed by service
    severities = {"info": 9, "warn": 13, "error": 17}
    for _, line in got:
        assert line["severity"] == severities[line["level"]]
        assert line["observed"] == line["ts"]
        assert line["ids"] == trace_ids(line["request_id"])
        assert len(line["ids"][0]) == 16 and len(line["ids"][1]) == 8
        assert line["k8s"] == {
            "k8s.namespace.name": "shop",
            "k8s.deployment.name": line["service"],
            "k8s.pod.name": line["host"],
        }

    def comparable(line: dict[str, Any]) -> tuple[Any, ...]:
        return (
            round(line["ts"], 6),
            line["service"],
            line["host"],
            line["level"],
            line["msg"],
            line["request_id"],
        )

    assert sorted(map(comparable, (line for _, line in got))) == sorted(map(comparable, reference))
    # many records a message: one request per service per tick
    logs_messages = [m for m in messages if m[0] == "logs"]
    assert len(logs_messages) <= TICKS * 5
    assert len(got) / len(logs_messages) > 10


def test_latency_samples_become_a_cumulative_histogram_per_series() -> None:
    samples = [
        line for line in native(11) if line["kind"] == "metrics" and line["name"] == LATENCY_METRIC
    ]
    traffic = OtlpTraffic(scenario("steady", 60), seed=11)
    messages = run(traffic)
    last: dict[tuple[str, str, str], Any] = {}
    points = 0
    for service, host, metric, point in metric_points(messages):
        if metric.name != LATENCY_METRIC:
            continue
        points += 1
        assert metric.unit == "ms"
        assert (
            metric.histogram.aggregation_temporality
            == AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
        )
        assert list(point.explicit_bounds) == list(LATENCY_BOUNDS)
        series = (service, host, attrs(point.attributes)["path"])
        before = last.get(series)
        if before is not None:  # cumulative: same start, totals never go down
            assert point.start_time_unix_nano == before.start_time_unix_nano
            assert point.time_unix_nano > before.time_unix_nano
            assert point.count >= before.count
        assert point.start_time_unix_nano < point.time_unix_nano
        last[series] = point
    # the last point of each series holds every sample of it, in the right buckets
    expected: dict[tuple[str, str, str], list[float]] = {}
    for s in samples:
        expected.setdefault((s["service"], s["host"], s["labels"]["path"]), []).append(s["value"])
    assert set(last) == set(expected)
    for series, values in expected.items():
        point = last[series]
        buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        for v in values:
            buckets[bisect.bisect_left(LATENCY_BOUNDS, v)] += 1
        assert point.count == len(values), series
        assert list(point.bucket_counts) == buckets, series
        assert point.sum == pytest.approx(sum(values))
        assert (point.min, point.max) == (min(values), max(values))
    assert records_of(traffic, Counter())["metrics"] == points + sum(
        1 for _, _, m, _ in metric_points(messages) if m.name != LATENCY_METRIC
    )


def test_host_gauges_are_gauges_with_the_simulators_values() -> None:
    reference = sorted(
        (line["service"], line["host"], line["name"], line["value"], line["ts"])
        for line in native(3)
        if line["kind"] == "metrics" and line["name"] != LATENCY_METRIC
    )
    got = sorted(
        (service, host, metric.name, point.as_double, point.time_unix_nano / 1e9)
        for service, host, metric, point in metric_points(
            run(OtlpTraffic(scenario("steady", 60), seed=3))
        )
        if metric.WhichOneof("data") == "gauge"
    )
    assert len(got) == len(reference) == 3 * 5 * 3 * 2  # 3 seconds, 5 services x 3 hosts x 2
    assert got == [(s, h, n, v, pytest.approx(ts)) for s, h, n, v, ts in reference]


def test_an_error_burst_is_error_records_of_the_right_service() -> None:
    plan = scenario("error-burst", 3.0)  # 40 % errors of the first service from 1 s to 2 s
    target = plan.phases[0].service
    lines = [line for _, line in log_lines(run(OtlpTraffic(plan, seed=5)))]
    during = [line for line in lines if T0 + 1.0 <= line["ts"] < T0 + 2.0]
    errors = Counter(line["service"] for line in during if line["severity"] == 17)
    totals = Counter(line["service"] for line in during)
    assert errors[target] / totals[target] > 0.25
    others = sum(n for s, n in errors.items() if s != target)
    assert others / (sum(totals.values()) - totals[target]) < 0.05
    assert all(
        line["msg"] and line["level"] == "error" for line in during if line["severity"] == 17
    )


def test_events_stay_native_json_and_count_as_records() -> None:
    plan = scenario("deploy", 3.0)
    traffic = OtlpTraffic(plan, seed=2)
    messages = run(traffic)
    events = [json.loads(v) for k, _, v in messages if k == "events"]
    assert [(e["service"], e["type"]) for e in events] == [(plan.events[0].service, "deploy")]
    assert traffic.records["events"] == 1
    produced = Counter(k for k, _, _ in messages)
    records = records_of(traffic, produced)
    assert records["logs"] == sum(1 for _ in log_lines(messages))
    assert produced["logs"] < records["logs"]
    # JSON traffic: a message is a record
    plain = make_traffic("json", plan, seed=2)
    assert type(plain) is Traffic
    assert records_of(plain, produced) == produced


def test_no_message_carries_more_than_max_records() -> None:
    traffic = OtlpTraffic(scenario("steady", 60), seed=9, max_records=7)
    messages = run(traffic, plan_requests=200)
    sizes = Counter()
    for kind, _, value in messages:
        if kind == "logs":
            n = sum(
                len(sl.log_records)
                for rl in ExportLogsServiceRequest.FromString(value).resource_logs
                for sl in rl.scope_logs
            )
        elif kind == "metrics":
            n = sum(1 for _ in metric_points([(kind, b"", value)]))
        else:
            continue
        assert 1 <= n <= 7
        sizes[kind] += n
    assert sizes == Counter({k: traffic.records[k] for k in ("logs", "metrics")})


def _base64_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode()
            if k in ("traceId", "spanId")
            else _base64_ids(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_base64_ids(v) for v in node]
    return node


def test_otlp_json_is_the_collectors_json_of_the_same_requests() -> None:
    as_proto = run(OtlpTraffic(scenario("steady", 60), seed=4))
    as_json = run(OtlpTraffic(scenario("steady", 60), seed=4, encoding="otlp-json"))
    assert [(k, key) for k, key, _ in as_json] == [(k, key) for k, key, _ in as_proto]
    kinds = Counter()
    for (kind, _, text), (_, _, binary) in zip(as_json, as_proto, strict=True):
        if kind == "events":
            assert text == binary
            continue
        kinds[kind] += 1
        doc = json.loads(text)
        cls = ExportLogsServiceRequest if kind == "logs" else ExportMetricsServiceRequest
        # the same request: with the ids back in base64, protobuf's own JSON parser agrees
        assert json_format.ParseDict(_base64_ids(doc), cls()) == cls.FromString(binary)
        if kind == "logs":
            rl = doc["resourceLogs"][0]
            assert rl["resource"]["attributes"][0] == {
                "key": "service.name",
                "value": {"stringValue": rl["resource"]["attributes"][0]["value"]["stringValue"]},
            }
            rec = rl["scopeLogs"][0]["logRecords"][0]
            assert isinstance(rec["timeUnixNano"], str) and rec["timeUnixNano"].isdigit()
            assert isinstance(rec["observedTimeUnixNano"], str)
            assert isinstance(rec["severityNumber"], int) and rec["severityText"].isupper()
            assert rec["body"] == {"stringValue": rec["body"]["stringValue"]}
            trace_id, span_id = trace_ids(rec["attributes"][0]["value"]["stringValue"])
            assert rec["traceId"] == trace_id.hex() and len(rec["traceId"]) == 32
            assert rec["spanId"] == span_id.hex() and len(rec["spanId"]) == 16
        else:
            for metric in doc["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]:
                if "histogram" in metric:
                    hist = metric["histogram"]
                    assert hist["aggregationTemporality"] == 2
                    point = hist["dataPoints"][0]
                    assert all(isinstance(c, str) for c in point["bucketCounts"])
                    assert isinstance(point["count"], str)
                    assert isinstance(point["startTimeUnixNano"], str)
                    assert point["explicitBounds"] == list(LATENCY_BOUNDS)
                else:
                    assert isinstance(metric["gauge"]["dataPoints"][0]["asDouble"], float)
        assert b"resource_logs" not in text and b"time_unix_nano" not in text  # camelCase
    assert kinds["logs"] > 0 and kinds["metrics"] > 0


def test_records_are_buffered_between_exports_and_flushed_at_the_end() -> None:
    reference = sorted(
        (line["service"], line["request_id"], line["msg"])
        for line in native(8)
        if line["kind"] == "logs"
    )
    traffic = OtlpTraffic(scenario("steady", 60), seed=8, export_interval_s=1.0)
    during = run(traffic)  # 3 s of run time: exports at 0, 1 and 2 s
    tail = list(flush(traffic, now=T0 + 3))
    assert tail and all(kind in ("logs", "metrics") for kind, _, _ in tail)
    assert list(flush(traffic)) == []  # nothing left
    assert list(flush(Traffic(scenario("steady", 60)))) == []
    lines = [line for _, line in log_lines(during + tail)]
    assert sorted((x["service"], x["request_id"], x["msg"]) for x in lines) == reference
    logs_messages = [m for m in during + tail if m[0] == "logs"]
    assert len(logs_messages) == 4 * 5  # one per service per export
    assert sum(traffic.records.values()) == len(lines) + sum(
        1 for _ in metric_points(during + tail)
    )
    # a series exported once per export, its count the samples until then
    last_points = [p for s, _, m, p in metric_points(tail) if m.name == LATENCY_METRIC]
    assert all(p.time_unix_nano == round((T0 + 3) * 1e9) for p in last_points)


def test_only_otlp_encodings_are_accepted() -> None:
    with pytest.raises(ValueError, match="otlp-proto or otlp-json"):
        OtlpTraffic(scenario("steady", 60), encoding="json")  # type: ignore[arg-type]
