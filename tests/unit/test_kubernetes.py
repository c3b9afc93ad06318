"""Kubernetes-shaped records without a service: Fluent Bit, Vector, and Kubernetes Events."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtmh.ingest.decode import decode
from rtmh.ingest.kubernetes import service_of_event, workload_of_pod
from rtmh.records import DecodedRecord, KafkaMessage, Kind, Rejected

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def _decode(kind: Kind, body: dict[str, Any]) -> DecodedRecord | Rejected:
    msg = KafkaMessage("t", 0, 0, None, json.dumps(body).encode(), int(NOW * 1000) - 5000)
    return decode(msg, kind, now=NOW)


def _record(kind: Kind, body: dict[str, Any]) -> DecodedRecord:
    rec = _decode(kind, body)
    assert isinstance(rec, DecodedRecord), rec
    return rec


@pytest.mark.parametrize(
    ("pod", "workload"),
    [
        ("checkout-7d9f8c6b5-x2x9z", "checkout"),  # Deployment: <rs hash>-<pod suffix>
        ("payments-api-5b8d7c9f4d-qwv2k", "payments-api"),
        ("node-exporter-x2x9z", "node-exporter"),  # DaemonSet / Job: one suffix
        ("db-0", "db"),  # StatefulSet ordinal
        ("redis-12", "redis"),
        ("standalone", "standalone"),  # no generated suffix
        ("my-api", "my-api"),  # a word is not a suffix (vowels, length)
        ("web-server", "web-server"),
    ],
)
def test_workload_of_pod(pod: str, workload: str) -> None:
    assert workload_of_pod(pod) == workload


FLUENT_BIT = {
    "log": "2026-01-01T00:00:00Z ERROR upstream timed out\n",
    "stream": "stderr",
    "time": "2025-12-31T23:59:58.5Z",
    "kubernetes": {
        "pod_name": "checkout-7d9f8c6b5-x2x9z",
        "namespace_name": "prod",
        "container_name": "server",
        "host": "node-1",
        "labels": {"app.kubernetes.io/name": "checkout", "app": "co"},
    },
}


def _with_labels(labels: dict[str, str] | None, **meta: str) -> dict[str, Any]:
    body = json.loads(json.dumps(FLUENT_BIT))
    kube = {"pod_name": "checkout-7d9f8c6b5-x2x9z", **meta}
    if labels is not None:
        kube["labels"] = labels
    body["kubernetes"] = kube
    return body


def test_fluent_bit_pod_line_takes_the_recommended_label() -> None:
    rec = _record(Kind.LOGS, FLUENT_BIT)
    assert (rec.service, rec.host) == ("checkout", "node-1")
    assert rec.event_time == NOW - 1.5
    assert rec.data == json.dumps(FLUENT_BIT)


@pytest.mark.parametrize(
    ("body", "service"),
    [
        (_with_labels({"app": "co"}, container_name="server"), "co"),
        (_with_labels({"k8s-app": "kube-dns"}, container_name="dns"), "kube-dns"),
        (_with_labels({"team": "x"}, container_name="server"), "server"),
        (_with_labels(None), "checkout"),  # the pod's workload, last
    ],
)
def test_fluent_bit_service_order(body: dict[str, Any], service: str) -> None:
    assert _record(Kind.LOGS, body).service == service


def test_vector_kubernetes_logs() -> None:
    body = {
        "message": "GET /health 200",
        "timestamp": "2025-12-31T23:59:59Z",
        "kubernetes": {
            "pod_name": "cart-5b8d7c9f4d-qwv2k",
            "container_name": "cart",
            "pod_node_name": "node-7",
            "pod_labels": {"app.kubernetes.io/name": "cart-service"},
        },
    }
    rec = _record(Kind.LOGS, body)
    assert (rec.service, rec.host, rec.event_time) == ("cart-service", "node-7", NOW - 1)


def test_an_own_service_wins_over_kubernetes() -> None:
    body = {**FLUENT_BIT, "service": "billing", "host": "h1"}
    rec = _record(Kind.LOGS, body)
    assert (rec.service, rec.host) == ("billing", "h1")


def test_kubernetes_object_without_names_is_still_missing_a_service() -> None:
    rejected = _decode(Kind.LOGS, {"log": "x", "kubernetes": {"namespace_name": "prod"}})
    assert rejected == Rejected("missing required field 'service'")


BACKOFF = {
    "kind": "Event",
    "apiVersion": "v1",
    "metadata": {"name": "checkout-7d9f8c6b5-x2x9z.17a", "namespace": "prod"},
    "involvedObject": {
        "kind": "Pod",
        "name": "checkout-7d9f8c6b5-x2x9z",
        "namespace": "prod",
        "fieldPath": "spec.containers{server}",
    },
    "reason": "BackOff",
    "message": "Back-off restarting failed container server",
    "type": "Warning",
    "count": 4,
    "firstTimestamp": "2025-12-31T23:50:00Z",
    "lastTimestamp": "2025-12-31T23:59:30Z",
    "source": {"component": "kubelet", "host": "node-1"},
}


def test_core_v1_event_becomes_an_event_of_the_pods_service() -> None:
    rec = _record(Kind.EVENTS, BACKOFF)
    assert (rec.kind, rec.service, rec.host) == (Kind.EVENTS, "checkout", "node-1")
    assert rec.event_type == "kubernetes:BackOff"
    assert rec.event_time == NOW - 30
    assert rec.data == json.dumps(BACKOFF)  # reason, type and message kept as received


def test_events_k8s_io_v1_event() -> None:
    body = {
        "kind": "Event",
        "apiVersion": "events.k8s.io/v1",
        "regarding": {"kind": "Deployment", "name": "checkout", "namespace": "prod"},
        "reason": "ScalingReplicaSet",
        "note": "Scaled up replica set checkout-7d9f8c6b5 to 3",
        "type": "Normal",
        "eventTime": "2025-12-31T23:59:50.250000Z",
        "reportingInstance": "kube-controller-manager-node-0",
    }
    rec = _record(Kind.EVENTS, body)
    assert (rec.service, rec.host) == ("checkout", "kube-controller-manager-node-0")
    assert rec.event_type == "kubernetes:ScalingReplicaSet"
    assert rec.event_time == NOW - 9.75


def test_event_labels_copied_by_the_exporter_come_first() -> None:
    body = json.loads(json.dumps(BACKOFF))
    body["involvedObject"]["labels"] = {"app.kubernetes.io/name": "checkout-svc"}
    assert service_of_event(body) == "checkout-svc"


def test_replicaset_event_names_its_deployment() -> None:
    body = {**BACKOFF, "involvedObject": {"kind": "ReplicaSet", "name": "checkout-7d9f8c6b5"}}
    assert service_of_event(body) == "checkout"


def test_event_without_time_takes_the_broker_time() -> None:
    body = {k: v for k, v in BACKOFF.items() if not k.endswith("Timestamp")}
    assert _record(Kind.EVENTS, body).event_time == NOW - 5


def test_event_without_object_is_dead_lettered_with_a_reason() -> None:
    body = {k: v for k, v in BACKOFF.items() if k != "involvedObject"}
    rejected = _decode(Kind.EVENTS, body)
    assert rejected == Rejected("Kubernetes Event names no object: missing 'involvedObject.name'")


def test_event_with_a_bad_time_names_the_field() -> None:
    rejected = _decode(Kind.EVENTS, {**BACKOFF, "lastTimestamp": "yesterday"})
    assert isinstance(rejected, Rejected)
    assert "lastTimestamp" in rejected.reason


def test_native_events_are_unchanged() -> None:
    rec = _record(Kind.EVENTS, {"service": "api", "type": "deploy", "ts": NOW - 2})
    assert (rec.service, rec.event_type, rec.event_time) == ("api", "deploy", NOW - 2)
