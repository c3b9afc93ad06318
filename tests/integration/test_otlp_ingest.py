"""OTLP, as the OpenTelemetry Collector's Kafka exporter writes it, through the real broker and
PostgreSQL: requests built with the official ``opentelemetry-proto`` classes, in both encodings
(``otlp_proto``, ``otlp_json``), on the RTMH topics and on topics a user maps to a kind; one
raw_events row per record, the metric windows of sums, a cumulative counter across a reset and
histograms, a bad record dead-lettered alone, and exactly-once across a killed worker."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
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
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from rtmh.kafka.client import ensure_topics, make_producer
from rtmh.otlp_traffic import otlp_json

from .ingest_support import (
    counts,
    running,
    start_worker,
    wait_for,
    wait_for_rows,
    worker_env,
    worker_thread,
)

CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
SCOPE = InstrumentationScope(name="io.opentelemetry.test", version="1.0")
ENCODINGS = ("otlp-proto", "otlp-json")
Request = ExportLogsServiceRequest | ExportMetricsServiceRequest


def value(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    return AnyValue(string_value=str(v))


def kvs(**attrs: object) -> list[KeyValue]:
    return [KeyValue(key=k.replace("__", "."), value=value(v)) for k, v in attrs.items()]


def res(**attrs: object) -> Resource:
    return Resource(attributes=kvs(**attrs))


def encode(request: Request, encoding: str) -> bytes:
    return otlp_json(request) if encoding == "otlp-json" else request.SerializeToString()


def ns(epoch: float) -> int:
    return round(epoch * 1e9)


def log(at: float, severity: int, text: str, body: str, **attrs: object) -> LogRecord:
    return LogRecord(
        time_unix_nano=ns(at),
        observed_time_unix_nano=ns(at) + 1000,
        severity_number=severity,  # type: ignore[arg-type]
        severity_text=text,
        body=AnyValue(string_value=body),
        attributes=kvs(**attrs),
        trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"),
        span_id=bytes.fromhex("eee19b7ec3c1b174"),
    )


def logs_request(*resources: tuple[Resource, Sequence[LogRecord]]) -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(
        resource_logs=[
            ResourceLogs(resource=r, scope_logs=[ScopeLogs(scope=SCOPE, log_records=recs)])
            for r, recs in resources
        ]
    )


def metrics_request(*resources: tuple[Resource, Sequence[Metric]]) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(resource=r, scope_metrics=[ScopeMetrics(scope=SCOPE, metrics=ms)])
            for r, ms in resources
        ]
    )


def produce(broker: str, messages: Sequence[tuple[str, bytes, bytes | None]]) -> None:
    """(topic, value, key) in order; one partition per topic keeps a series' points in order."""
    ensure_topics(broker, sorted({t for t, _, _ in messages}), 1)
    producer = make_producer(broker)
    for topic, data, key in messages:
        producer.produce(topic, value=data, key=key)
    assert producer.flush(30) == 0


def query(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def assert_record_indexes(url: str) -> None:
    """(topic, partition, offset, record_index) unique, and each message's indexes 0..n-1 where
    no record of it was dead-lettered."""
    ((rows, distinct),) = query(
        url,
        "SELECT count(*), count(DISTINCT (topic, kafka_partition, kafka_offset, record_index)) "
        "FROM raw_events",
    )
    assert rows == distinct
    per_message = query(
        url,
        "SELECT topic, kafka_partition, kafka_offset, array_agg(record_index ORDER BY "
        "record_index) FROM raw_events WHERE (topic, kafka_partition, kafka_offset) NOT IN "
        "(SELECT topic, kafka_partition, kafka_offset FROM dead_letters) "
        "GROUP BY topic, kafka_partition, kafka_offset",
    )
    assert per_message
    for topic, partition, offset, indexes in per_message:
        assert indexes == list(range(len(indexes))), (topic, partition, offset, indexes)


# --- logs ------------------------------------------------------------------------------------


def test_otlp_logs_in_both_encodings_on_rtmh_and_mapped_topics(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    """A request of three resources (one named by Kubernetes attributes only) is one row per log
    record with its resource's service and host, its level, body and time; the same on
    rtmh.logs and on a topic mapped with RTMH_LOG_TOPICS, in both encodings."""
    mapped = f"otlp_logs_{topic_prefix.rstrip('.')}"  # the Collector's default name, made unique
    now = time.time()

    def request(tag: str) -> ExportLogsServiceRequest:
        return logs_request(
            (
                res(service__name=f"checkout-{tag}", host__name="node-1", k8s__pod__name="p"),
                [
                    log(now - 5, 9, "INFO", "order placed", order_id=42, amount=12.5),
                    log(now - 4, 17, "ERROR", "payment declined", retry=False),
                    log(now - 3, 13, "WARN", "slow upstream"),
                ],
            ),
            (
                res(service__name=f"payments-{tag}", host__name="node-2"),
                [log(now - 2, 21, "FATAL", "out of memory"), log(now - 1, 5, "DEBUG", "tick")],
            ),
            (
                # no service.name: the Kubernetes resource attributes name it
                res(k8s__deployment__name=f"cart-{tag}", k8s__pod__name="cart-5c9d8f7b6-bcdfg"),
                [log(now, 10, "INFO2", "cart saved")],
            ),
        )

    combos = [(t, e) for t in (topic_prefix + "logs", mapped) for e in ENCODINGS]
    tags = {combo: f"{i}" for i, combo in enumerate(combos)}
    produce(broker, [(t, encode(request(tags[t, e]), e), b"k") for t, e in combos])
    with worker_thread(db_url, broker, topic_prefix, log_topics=f"{topic_prefix}logs,{mapped}"):
        wait_for(lambda: sum(counts(db_url)) >= 6 * len(combos), 60, "every record")
    assert counts(db_url) == (6 * len(combos), 0)
    assert_record_indexes(db_url)
    stored = query(
        db_url,
        "SELECT topic, kafka_offset, record_index, service, host, level, "
        "extract(epoch FROM event_time)::float8, data FROM raw_events "
        "ORDER BY topic, kafka_offset, record_index",
    )
    for (topic, encoding), tag in tags.items():
        got = [r for r in stored if r[0] == topic and r[7]["service"].endswith(f"-{tag}")]
        assert [(r[2], r[3], r[4], r[5]) for r in got] == [
            (0, f"checkout-{tag}", "node-1", "info"),
            (1, f"checkout-{tag}", "node-1", "error"),
            (2, f"checkout-{tag}", "node-1", "warn"),
            (3, f"payments-{tag}", "node-2", "fatal"),
            (4, f"payments-{tag}", "node-2", "debug"),
            (5, f"cart-{tag}", None, "info"),
        ], (topic, encoding)
        for offset_row, at in zip(got, (5, 4, 3, 2, 1, 0), strict=True):
            assert abs(offset_row[6] - (now - at)) < 2e-6  # timeUnixNano, to the microsecond
        first = got[0][7]
        assert first["msg"] == "order placed"
        assert first["service"] == f"checkout-{tag}" and first["level"] == "info"
        assert first["attributes"] == {"order_id": 42, "amount": 12.5}
        assert first["resource"]["service.name"] == f"checkout-{tag}"
        assert first["resource"]["k8s.pod.name"] == "p"
        assert got[1][7]["attributes"] == {"retry": False}
        assert [r[7]["msg"] for r in got] == [
            "order placed",
            "payment declined",
            "slow upstream",
            "out of memory",
            "tick",
            "cart saved",
        ]


# --- metrics ---------------------------------------------------------------------------------


def gauge(name: str, at: float, v: float) -> Metric:
    return Metric(
        name=name, gauge=Gauge(data_points=[NumberDataPoint(time_unix_nano=ns(at), as_double=v)])
    )


def counter(name: str, start: float, at: float, total: float) -> Metric:
    return Metric(
        name=name,
        sum=Sum(
            aggregation_temporality=CUMULATIVE,
            is_monotonic=True,
            data_points=[
                NumberDataPoint(
                    start_time_unix_nano=ns(start), time_unix_nano=ns(at), as_double=total
                )
            ],
        ),
    )


def delta_sum(name: str, at: float, v: int) -> Metric:
    return Metric(
        name=name,
        sum=Sum(
            aggregation_temporality=DELTA,
            is_monotonic=True,
            data_points=[
                NumberDataPoint(start_time_unix_nano=ns(at - 1), time_unix_nano=ns(at), as_int=v)
            ],
        ),
    )


def histogram(name: str, at: float) -> Metric:
    """7 observations: 3 in (0, 10], 2 in (10, 100], 2 over 100; sum 640, min 2, max 400."""
    return Metric(
        name=name,
        unit="ms",
        histogram=Histogram(
            aggregation_temporality=DELTA,
            data_points=[
                HistogramDataPoint(
                    start_time_unix_nano=ns(at - 10),
                    time_unix_nano=ns(at),
                    count=7,
                    sum=640.0,
                    min=2.0,
                    max=400.0,
                    explicit_bounds=[10.0, 100.0],
                    bucket_counts=[3, 2, 2],
                    attributes=kvs(path="/api/v1/pay"),
                )
            ],
        ),
    )


def cumulative_histogram(
    name: str, start: float, at: float, buckets: list[int], total: float
) -> Metric:
    """Running totals since ``start`` over bounds (10, 100], no min / max."""
    return Metric(
        name=name,
        histogram=Histogram(
            aggregation_temporality=CUMULATIVE,
            data_points=[
                HistogramDataPoint(
                    start_time_unix_nano=ns(start),
                    time_unix_nano=ns(at),
                    count=sum(buckets),
                    sum=total,
                    explicit_bounds=[10.0, 100.0],
                    bucket_counts=buckets,
                )
            ],
        ),
    )


def exponential(name: str, at: float) -> Metric:
    """scale 0 (base 2): 4 values in (1, 2], 4 in (2, 4], 2 zeros; sum 18, min 0, max 3.5."""
    return Metric(
        name=name,
        exponential_histogram=ExponentialHistogram(
            aggregation_temporality=DELTA,
            data_points=[
                ExponentialHistogramDataPoint(
                    start_time_unix_nano=ns(at - 10),
                    time_unix_nano=ns(at),
                    count=10,
                    sum=18.0,
                    min=0.0,
                    max=3.5,
                    scale=0,
                    zero_count=2,
                    positive=ExponentialHistogramDataPoint.Buckets(offset=0, bucket_counts=[4, 4]),
                )
            ],
        ),
    )


def window(url: str, service: str, metric: str) -> tuple[Any, ...]:
    """(count, sum, min, max) of the window starting at the pane that holds every point."""
    found = query(
        url,
        "SELECT count, sum, min, max FROM metrics_agg WHERE window_key = %s AND metric_type = %s "
        "ORDER BY window_start DESC LIMIT 1",
        (service, metric),
    )
    assert found, f"no window of {service} {metric}"
    return found[0]


def test_otlp_metrics_into_rows_and_windows(db_url: str, broker: str, topic_prefix: str) -> None:
    """Gauges, delta sums, a cumulative counter across a restart (totals 10, 25, 40, then 5 from a
    new start time: increments 15, 15, 5, the first point is the baseline), explicit and
    exponential histograms, and a cumulative histogram across the same kind of restart, each on
    rtmh.metrics and a mapped topic, in both encodings."""
    mapped = f"otlp_metrics_{topic_prefix.rstrip('.')}"
    # every point in one 10 s pane, so the window starting there holds all of them
    base = (int(time.time()) - 120) // 10 * 10 + 1.0
    messages: list[tuple[str, bytes, bytes | None]] = []
    combos = [(t, e) for t in (topic_prefix + "metrics", mapped) for e in ENCODINGS]
    services = {combo: f"billing-{i}" for i, combo in enumerate(combos)}
    for (topic, encoding), service in services.items():
        resource = res(service__name=service, host__name="node-9")

        def send(*metrics: Metric, topic: str = topic, encoding: str = encoding) -> None:
            request = metrics_request((resource, metrics))  # noqa: B023
            messages.append((topic, encode(request, encoding), b"billing"))

        send(
            gauge("cpu_percent", base, 42.5),
            delta_sum("jobs_done", base, 3),
            histogram("latency_ms", base + 1),
            exponential("queue_s", base + 1),
            counter("requests_total", base - 60, base, 10),
        )
        send(
            counter("requests_total", base - 60, base + 1, 25),
            delta_sum("jobs_done", base + 1, 4),
            cumulative_histogram("payload_bytes", base - 60, base + 1, [1, 2, 1], 40.0),
        )
        send(
            counter("requests_total", base - 60, base + 2, 40),
            cumulative_histogram("payload_bytes", base - 60, base + 2, [3, 4, 3], 130.0),
        )
        # the process restarted: a new start time, the total starts again
        send(
            counter("requests_total", base + 2.5, base + 3, 5),
            cumulative_histogram("payload_bytes", base + 2.5, base + 3, [2, 0, 0], 5.0),
        )
    produce(broker, messages)
    records = 5 + 3 + 2 + 2
    with worker_thread(
        db_url, broker, topic_prefix, metric_topics=f"{topic_prefix}metrics,{mapped}"
    ):
        wait_for(lambda: sum(counts(db_url)) >= records * len(combos), 60, "every data point")
    assert counts(db_url) == (records * len(combos), 0)
    assert_record_indexes(db_url)
    for (topic, encoding), service in services.items():
        rows = query(
            db_url,
            "SELECT kafka_offset, record_index, host, data->>'name' FROM raw_events "
            "WHERE topic = %s AND service = %s ORDER BY kafka_offset, record_index",
            (topic, service),
        )
        offsets = sorted({r[0] for r in rows})
        assert [(offsets.index(o), i, h, n) for o, i, h, n in rows] == [
            (0, 0, "node-9", "cpu_percent"),
            (0, 1, "node-9", "jobs_done"),
            (0, 2, "node-9", "latency_ms"),
            (0, 3, "node-9", "queue_s"),
            (0, 4, "node-9", "requests_total"),
            (1, 0, "node-9", "requests_total"),
            (1, 1, "node-9", "jobs_done"),
            (1, 2, "node-9", "payload_bytes"),
            (2, 0, "node-9", "requests_total"),
            (2, 1, "node-9", "payload_bytes"),
            (3, 0, "node-9", "requests_total"),
            (3, 1, "node-9", "payload_bytes"),
        ], (topic, encoding)
        assert window(db_url, service, "cpu_percent") == (1, 42.5, 42.5, 42.5)
        assert window(db_url, service, "jobs_done") == (2, 7.0, 3.0, 4.0)
        assert window(db_url, service, "requests_total") == (3, 35.0, 5.0, 15.0)
        assert window(db_url, service, "latency_ms") == (7, 640.0, 2.0, 400.0)
        assert window(db_url, service, "queue_s") == (10, 18.0, 0.0, 3.5)
        # cumulative histogram: baseline, +6 observations (sum +90), reset: 2 (sum 5); no min /
        # max in the points, so the window's are the extreme buckets' values (10 and 100)
        assert window(db_url, service, "payload_bytes") == (8, 95.0, 10.0, 100.0)


# --- dead letters ------------------------------------------------------------------------------


def test_a_bad_record_is_dead_lettered_alone_and_garbage_as_a_whole(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    now = time.time()
    nameless = res(host__name="node-7")  # no service.name, no Kubernetes attributes
    good = [
        (
            res(service__name="api", host__name="node-1"),
            [log(now - 3, 9, "INFO", "a"), log(now - 2, 9, "INFO", "b")],
        ),
        (nameless, [log(now - 1, 17, "ERROR", "who am I")]),
        (res(service__name="web", host__name="node-2"), [log(now, 9, "INFO", "c")]),
    ]
    garbage = b"\x0a\xff\xff\xff\xff\x0f\x12not a protobuf"
    messages = [
        (topic_prefix + "logs", encode(logs_request(*good), e), b"k") for e in ENCODINGS
    ] + [(topic_prefix + "logs", garbage, b"k")]
    produce(broker, messages)
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: sum(counts(db_url)) >= 2 * 4 + 1, 60, "rows and dead letters")
    assert counts(db_url) == (2 * 3, 3)
    stored = query(
        db_url,
        "SELECT kafka_offset, record_index, service, data->>'msg' FROM raw_events "
        "ORDER BY kafka_offset, record_index",
    )
    assert stored == [
        (offset, i, service, body)
        for offset in (0, 1)
        for i, service, body in ((0, "api", "a"), (1, "api", "b"), (3, "web", "c"))
    ]
    dead = query(
        db_url,
        "SELECT kafka_offset, record_index, payload, reason FROM dead_letters "
        "ORDER BY kafka_offset",
    )
    assert [(o, i) for o, i, _, _ in dead] == [(0, 2), (1, 2), (2, None)]
    for (_, _, payload, reason), encoding in zip(dead[:2], ENCODINGS, strict=True):
        assert "service" in reason, reason
        # the payload is the refused record cut out as a request of its own, in its encoding
        assert _refused_alone(bytes(payload), encoding, nameless, now), payload
    assert bytes(dead[2][2]) == garbage


def _refused_alone(payload: bytes, encoding: str, resource: Resource, now: float) -> bool:
    """The dead letter's payload parses, in its message's encoding, into a request holding
    exactly the refused record under its resource."""
    if encoding == "otlp-json":
        doc = json.loads(payload)
        for rl in doc.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                for rec in sl.get("logRecords", []):
                    for key in ("traceId", "spanId"):
                        if key in rec:
                            rec[key] = base64.b64encode(bytes.fromhex(rec[key])).decode()
        request = json_format.ParseDict(doc, ExportLogsServiceRequest())
    else:
        request = ExportLogsServiceRequest.FromString(payload)
    records = [
        (rl.resource, rec)
        for rl in request.resource_logs
        for sl in rl.scope_logs
        for rec in sl.log_records
    ]
    return records == [(resource, log(now - 1, 17, "ERROR", "who am I"))]


# --- exactly once ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_sigkill_mid_stream_stores_every_record_of_every_message_once(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path, encoding: str
) -> None:
    # batches of 200 records end inside a consume() call's messages (handed over mid-call); small
    # batches keep the worker slow enough that each kill lands mid-stream
    messages, per_message = 1500, 20
    now = time.time()
    topic = topic_prefix + "logs"
    batch: list[tuple[str, bytes, bytes | None]] = []
    for m in range(messages):
        service = f"svc{m % 7}"
        records = [
            log(now - 60 + m / 100, 9, "INFO", f"line {m}.{r}", seq=m * per_message + r)
            for r in range(per_message)
        ]
        request = logs_request((res(service__name=service, host__name="h1"), records))
        batch.append((topic, encode(request, encoding), service.encode()))
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 4)
    produce(broker, batch)
    total = messages * per_message
    env = worker_env(db_url, broker, topic_prefix, RTMH_BATCH_MAX_MESSAGES="200")
    log_file = tmp_path / "worker.log"
    for threshold in (total // 4, total // 2):
        proc = start_worker(env, log_file)
        wait_for_rows(db_url, threshold, f"{threshold} rows", alive=running(proc), log=log_file)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_worker(env, log_file)
    try:
        wait_for_rows(db_url, total, f"{total} rows", alive=running(proc), log=log_file)
    finally:
        proc.terminate()
        proc.wait(30)
    ((rows, places, seqs, dead),) = query(
        db_url,
        "SELECT count(*), count(DISTINCT (topic, kafka_partition, kafka_offset, record_index)), "
        "count(DISTINCT data->'attributes'->>'seq'), (SELECT count(*) FROM dead_letters) "
        "FROM raw_events",
    )
    assert (rows, places, seqs, dead) == (total, total, total, 0)
    ((messages_stored, whole),) = query(
        db_url,
        "SELECT count(*), count(*) FILTER (WHERE n = 20 AND lo = 0 AND hi = 19) FROM ("
        "  SELECT count(*) AS n, min(record_index) AS lo, max(record_index) AS hi FROM raw_events"
        "  GROUP BY kafka_partition, kafka_offset) AS m",
    )
    assert messages_stored == whole == messages


# --- rtmh simulate --format ------------------------------------------------------------------


@pytest.mark.parametrize("encoding", [*ENCODINGS, "json"])
def test_simulate_otlp_error_burst_is_stored_as_the_services_error_records(
    db_url: str, broker: str, topic_prefix: str, cli_env: dict[str, str], encoding: str
) -> None:
    """`rtmh simulate --format otlp-*` (and json, the default): every record it reports is
    stored, and its error burst reads as error rows of the burst's service (checkout, 40 %
    errors in the middle third)."""
    env = {
        **cli_env,
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "RTMH_TOPIC_PREFIX": topic_prefix,
        "RTMH_PARTITIONS": "2",
        "COLUMNS": "200",
    }
    args = ["--format", encoding, "--scenario", "error-burst", "--duration", "3", "--rate", "600"]
    proc = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "simulate", *args, "--seed", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = re.search(r"([\d,]+) messages, ([\d,]+) records", proc.stdout)
    assert found, proc.stdout
    messages, records = (int(g.replace(",", "")) for g in found.groups())
    if encoding == "json":
        assert records == messages > 0  # a JSON message is one record
    else:
        assert records > 4 * messages > 0  # many records a message
    row = re.escape(topic_prefix) + r"(logs|metrics|events)\W+([\d,]+)\W+([\d,]+)"
    table = {
        kind: (int(m.replace(",", "")), int(r.replace(",", "")))
        for kind, m, r in re.findall(row, proc.stdout)
    }
    assert set(table) == {"logs", "metrics", "events"}, proc.stdout
    assert sum(r for _, r in table.values()) == records, proc.stdout
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: sum(counts(db_url)) >= records, 60, f"{records} records")
    assert counts(db_url) == (records, 0)
    assert_record_indexes(db_url)
    by_kind = dict(
        query(
            db_url,
            "SELECT substr(topic, length(%s) + 1), count(*) FROM raw_events GROUP BY 1",
            (topic_prefix,),
        )
    )
    assert by_kind == {kind: r for kind, (_, r) in table.items() if r}
    errors = dict(
        query(
            db_url,
            "SELECT service, avg((level = 'error')::int)::float8 FROM raw_events "
            "WHERE topic = %s GROUP BY service",
            (topic_prefix + "logs",),
        )
    )
    assert errors["checkout"] > 0.08, errors  # ~40 % of a third of the run
    assert all(ratio < 0.04 for service, ratio in errors.items() if service != "checkout"), errors


# --- batches are bounded by records ------------------------------------------------------------


def test_a_batch_holds_at_most_its_bound_in_records_not_messages(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    """30 messages of 20 records, all waiting before the worker starts, so one consume() takes
    them all: with RTMH_BATCH_MAX_MESSAGES=100 every committed batch holds at most 100 records
    and the message that crossed the bound (under 120), never the 600 of the whole call."""
    topic = topic_prefix + "logs"
    now = time.time()
    batch: list[tuple[str, bytes, bytes | None]] = []
    for m in range(30):
        records = [log(now - 30 + m / 10, 9, "INFO", f"line {m}.{r}") for r in range(20)]
        request = logs_request((res(service__name="bounded", host__name="h1"), records))
        batch.append((topic, encode(request, "otlp-proto"), b"bounded"))
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 1)
    produce(broker, batch)
    committed: list[tuple[int, int]] = []
    with worker_thread(db_url, broker, topic_prefix, batch_max_messages=100) as worker:
        worker.after_commit.append(lambda b, _t: committed.append((len(b), b.messages)))
        wait_for(lambda: counts(db_url)[0] >= 600, 60, "600 records")
    assert counts(db_url) == (600, 0)
    assert sum(records for records, _ in committed) == 600
    assert sum(messages for _, messages in committed) == 30
    assert len(committed) >= 5
    assert all(records < 120 for records, _ in committed), committed
