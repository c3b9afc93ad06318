"""Kubernetes-shaped records through the real broker and PostgreSQL: Fluent Bit and Vector log
records that name no service get it from the pod's metadata, and Kubernetes Events on the events
topic become events of the involved object's service that an incident lists among its recent
changes, as it lists a deploy."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg

from rtmh.kafka.client import ensure_topics, make_producer

from .ingest_support import counts, wait_for, worker_thread

POD = "checkout-7d9f8c6b5-x2x9z"


def rfc3339(epoch: float, digits: int = 6) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="microseconds" if digits else "seconds").replace("+00:00", "Z")


def fluent_bit(line: str, at: float, kubernetes: dict[str, Any], **merged: str) -> bytes:
    """A Fluent Bit record as its kubernetes filter leaves it (``merged``: the keys Merge_Log
    lifts out of a JSON line)."""
    record: dict[str, Any] = {
        "log": line,
        "stream": "stderr",
        "time": rfc3339(at),
        "kubernetes": kubernetes,
        **merged,
    }
    return msgspec.json.encode(record)


def fluent_bit_meta(**extra: Any) -> dict[str, Any]:
    return {
        "pod_name": POD,
        "namespace_name": "prod",
        "pod_id": "5f0c6f0e-8d4e-4d59-9a34-7c1f3f0e2b11",
        "host": "node-1",
        "docker_id": "4c0a2a5e7b",
        "container_image": "registry.example/checkout:2.4.1",
        **extra,
    }


def k8s_event(
    reason: str, kind: str, message: str, at: float, *, obj_kind: str = "Pod", count: int = 1
) -> bytes:
    """A core/v1 Event as kubernetes-event-exporter (or `kubectl get events -o json`) writes it."""
    return msgspec.json.encode(
        {
            "kind": "Event",
            "apiVersion": "v1",
            "metadata": {
                "name": f"{POD}.17a2b{reason.lower()}",
                "namespace": "prod",
                "creationTimestamp": rfc3339(at - 30, 0),
            },
            "involvedObject": {
                "kind": obj_kind,
                "namespace": "prod",
                "name": POD,
                "uid": "5f0c6f0e-8d4e-4d59-9a34-7c1f3f0e2b11",
                "apiVersion": "v1",
                "fieldPath": "spec.containers{checkout}",
            },
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": rfc3339(at - 30, 0),
            "lastTimestamp": rfc3339(at, 0),
            "count": count,
            "type": kind,
        }
    )


def rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


def test_fluent_bit_and_vector_records_get_their_service_from_the_pod(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    now = time.time()
    records = [
        # the recommended label wins over `app` and the container
        fluent_bit(
            "payment authorised",
            now - 5,
            fluent_bit_meta(
                container_name="checkout-main",
                labels={"app.kubernetes.io/name": "checkout", "app": "co"},
            ),
        ),
        fluent_bit(
            "cart saved", now - 4, fluent_bit_meta(container_name="web", labels={"app": "cart"})
        ),
        fluent_bit("indexing", now - 3, fluent_bit_meta(container_name="search-indexer")),
        fluent_bit(
            "upstream timed out",
            now - 2,
            fluent_bit_meta(container_name="checkout", labels={"app": "co"}),
            level="error",
        ),
        # Vector's kubernetes_logs source
        msgspec.json.encode(
            {
                "message": "GET /api/v1/items 200",
                "timestamp": rfc3339(now - 1),
                "stream": "stdout",
                "kubernetes": {
                    "pod_name": "catalog-6b7c8d9f5-bcdfg",
                    "pod_namespace": "prod",
                    "container_name": "catalog-app",
                    "pod_node_name": "node-2",
                    "pod_labels": {"app.kubernetes.io/name": "catalog", "pod-template-hash": "x"},
                },
            }
        ),
        # no labels, no container: the pod's workload
        fluent_bit("starting", now, {"pod_name": "inventory-5d4c8b7f9-qwrtz", "host": "node-3"}),
    ]
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 1)
    producer = make_producer(broker)
    for value in records:
        producer.produce(topic_prefix + "logs", value=value)
    assert producer.flush(30) == 0
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: sum(counts(db_url)) == len(records), 60, "every record")
    assert counts(db_url) == (len(records), 0)
    stored = rows(
        db_url,
        "SELECT kafka_offset, record_index, service, host, level, data->>'log', "
        "extract(epoch FROM event_time) FROM raw_events ORDER BY kafka_offset",
    )
    expected = [
        (0, "checkout", "node-1", None, "payment authorised"),
        (1, "cart", "node-1", None, "cart saved"),
        (2, "search-indexer", "node-1", None, "indexing"),
        (3, "co", "node-1", "error", "upstream timed out"),
        (4, "catalog", "node-2", None, None),
        (5, "inventory", "node-3", None, "starting"),
    ]
    assert [(o, s, h, lvl, line) for o, i, s, h, lvl, line, _ in stored] == expected
    assert all(i == 0 for _, i, *_ in stored)  # one record a JSON message
    # the shipper's time is the event time (microseconds)
    times = [float(t) for *_, t in stored]
    wanted = [now - 5, now - 4, now - 3, now - 2, now - 1, now]
    assert all(abs(t - w) < 2e-6 for t, w in zip(times, wanted, strict=True)), (times, wanted)


def test_kubernetes_events_become_the_pods_service_events_and_an_incidents_recent_changes(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    now = time.time()
    events = [
        k8s_event(
            "BackOff", "Warning", "Back-off restarting failed container checkout", now - 40, count=7
        ),
        k8s_event(
            "OOMKilling",
            "Warning",
            "Memory cgroup out of memory: Killed process 4242 (java)",
            now - 30,
        ),
        # a Normal event is stored, but is no change an on-call engineer needs first
        k8s_event("Pulled", "Normal", "Container image already present on machine", now - 20),
        # RTMH's own deploy event beside them
        msgspec.json.encode(
            {
                "ts": now - 50,
                "service": "checkout",
                "type": "deploy",
                "payload": {"version": "2.4.1"},
            }
        ),
    ]
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 1)
    producer = make_producer(broker)
    for value in events:
        producer.produce(topic_prefix + "events", value=value)
    assert producer.flush(30) == 0
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: sum(counts(db_url)) == len(events), 60, "the events")
        assert counts(db_url) == (len(events), 0)
        stored = rows(
            db_url,
            "SELECT service, host, data->>'reason', data->>'type', data->>'message', "
            "extract(epoch FROM event_time)::bigint FROM raw_events ORDER BY kafka_offset",
        )
        assert [r[:5] for r in stored[:3]] == [
            (
                "checkout",
                "node-1",
                "BackOff",
                "Warning",
                "Back-off restarting failed container checkout",
            ),
            (
                "checkout",
                "node-1",
                "OOMKilling",
                "Warning",
                "Memory cgroup out of memory: Killed process 4242 (java)",
            ),
            (
                "checkout",
                "node-1",
                "Pulled",
                "Normal",
                "Container image already present on machine",
            ),
        ]
        # the event time is lastTimestamp (whole seconds in core/v1)
        assert [r[5] for r in stored[:3]] == [int(now - 40), int(now - 30), int(now - 20)]
        # then checkout's errors: 60 error lines from its pod trip high_error_rate
        for i in range(60):
            producer.produce(
                topic_prefix + "logs",
                value=fluent_bit(
                    f"upstream timed out ({i})",
                    now - 10 + i / 100,
                    fluent_bit_meta(labels={"app.kubernetes.io/name": "checkout"}),
                    level="error",
                ),
            )
        assert producer.flush(30) == 0
        wait_for(
            lambda: bool(rows(db_url, "SELECT 1 FROM incidents WHERE window_key = 'checkout'")),
            60,
            "an incident for checkout",
        )
    ((metadata,),) = rows(db_url, "SELECT metadata FROM incidents WHERE window_key = 'checkout'")
    assert metadata["rule_name"] == "high_error_rate"
    changes = metadata["recent_changes"]
    assert [c["type"] for c in changes] == [
        "kubernetes:OOMKilling",
        "kubernetes:BackOff",
        "deploy",
    ], changes
    oom, backoff, deploy = changes
    assert backoff["payload"]["message"] == "Back-off restarting failed container checkout"
    assert backoff["payload"]["severity"] == "Warning"
    assert backoff["payload"]["count"] == 7
    assert backoff["payload"]["object"]["kind"] == "Pod"
    assert backoff["payload"]["object"]["name"] == POD
    assert oom["payload"]["message"].startswith("Memory cgroup out of memory")
    assert deploy["payload"] == {"version": "2.4.1"}
    assert metadata["recent_errors"], "the errors that opened it are listed too"
