"""Kubernetes metadata, for records that name no service: which workload a pod's line comes from.

Pure: no I/O. Log shippers on Kubernetes attach the pod's metadata instead of a service name:
Fluent Bit's kubernetes filter as ``kubernetes: {pod_name, container_name, host, labels}``,
Vector's kubernetes_logs source as ``kubernetes: {pod_name, container_name, pod_node_name,
pod_labels}``. A Kubernetes Event (``kind: Event``, core/v1 or events.k8s.io/v1) names the
object it is about. ``decode`` asks here only when the record has no service of its own.

The service, first found wins (SERVICE_LABELS, then the container, then the pod's workload):

==== ====================================================== =====================================
 1   label ``app.kubernetes.io/name``                        the recommended label
 2   label ``app``                                           the older convention
 3   label ``k8s-app``                                       kube-system add-ons (kube-dns, ...)
 4   ``container_name``                                      Fluent Bit and Vector alike
 5   ``pod_name`` without its generated suffixes             ``checkout-7d9f8c6b5-x2x9z`` ->
                                                             ``checkout``; ``db-0`` -> ``db``
==== ====================================================== =====================================

For an Event the involved object's labels come first when the exporter copied them
(kubernetes-event-exporter does, as ``involvedObject.labels``); then a Pod's name goes through
rule 5, and a Deployment's, StatefulSet's, DaemonSet's, ReplicaSet's (suffix stripped) or Job's
name is the service itself.
"""

from __future__ import annotations

import re
from typing import Any, Final

#: label keys that name the application, in the order they are believed
SERVICE_LABELS: Final = ("app.kubernetes.io/name", "app", "k8s-app")

# A Deployment's pods are named <deployment>-<pod-template-hash>-<5 chars>; the hash and the
# suffix use Kubernetes' safe alphabet (no vowels, no 0/1/3), which keeps words like "-api" from
# being mistaken for one. A StatefulSet's pods end in -<ordinal>; a DaemonSet's or a Job's pods
# in -<5 chars> alone.
_SAFE: Final = "[bcdfghjklmnpqrstvwxz2456789]"
_DEPLOYMENT_POD: Final = re.compile(rf"^(.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$")
_SINGLE_SUFFIX_POD: Final = re.compile(rf"^(.+)-(?:{_SAFE}{{5}}|\d+)$")
_REPLICASET: Final = re.compile(rf"^(.+)-{_SAFE}{{6,10}}$")


def workload_of_pod(pod_name: str) -> str:
    """The workload a pod belongs to, from its generated name (the name itself when it has no
    generated suffix)."""
    found = _DEPLOYMENT_POD.match(pod_name) or _SINGLE_SUFFIX_POD.match(pod_name)
    return found.group(1) if found else pod_name


def _text(value: object) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _label_service(labels: object) -> str | None:
    if not isinstance(labels, dict):
        return None
    for key in SERVICE_LABELS:
        name = _text(labels.get(key))
        if name is not None:
            return name
    return None


def service_of_pod(meta: object) -> str | None:
    """The service a shipper's ``kubernetes`` object points at, None when it names none."""
    if not isinstance(meta, dict):
        return None
    name = _label_service(meta.get("labels")) or _label_service(meta.get("pod_labels"))
    if name is not None:
        return name
    container = _text(meta.get("container_name"))
    if container is not None:
        return container
    pod = _text(meta.get("pod_name"))
    return workload_of_pod(pod) if pod is not None else None


def host_of_pod(meta: object) -> str | None:
    """The node the pod runs on (Fluent Bit: ``host``, Vector: ``pod_node_name``)."""
    if not isinstance(meta, dict):
        return None
    return _text(meta.get("host")) or _text(meta.get("pod_node_name"))


def involved_object(event: dict[str, Any]) -> dict[str, Any]:
    """The object an Event is about: core/v1 ``involvedObject``, events.k8s.io/v1
    ``regarding``."""
    found = event.get("involvedObject")
    if not isinstance(found, dict):
        found = event.get("regarding")
    return found if isinstance(found, dict) else {}


def service_of_event(event: dict[str, Any]) -> str | None:
    """The service an Event concerns, None when its object has no usable name."""
    obj = involved_object(event)
    name = _label_service(obj.get("labels"))
    if name is not None:
        return name
    object_name = _text(obj.get("name"))
    if object_name is None:
        return None
    kind = obj.get("kind")
    if kind == "Pod":
        return workload_of_pod(object_name)
    if kind == "ReplicaSet":
        found = _REPLICASET.match(object_name)
        return found.group(1) if found else object_name
    return object_name


def host_of_event(event: dict[str, Any]) -> str | None:
    """The node that reported it (core/v1 ``source.host``, events.k8s.io/v1
    ``reportingInstance``)."""
    source = event.get("source")
    host = _text(source.get("host")) if isinstance(source, dict) else None
    return host or _text(event.get("reportingInstance"))


#: an Event's time, first found wins: when it last happened, then the newer API's fields
EVENT_TIME_KEYS: Final = (
    "lastTimestamp",
    "eventTime",
    "deprecatedLastTimestamp",
    "firstTimestamp",
)


def time_of_event(event: dict[str, Any]) -> tuple[str, object] | None:
    """(key, value) of the Event's time, None when it carries none (the broker time is used)."""
    for key in EVENT_TIME_KEYS:
        value = event.get(key)
        if value is not None:
            return key, value
    meta = event.get("metadata")
    if isinstance(meta, dict) and meta.get("creationTimestamp") is not None:
        return "metadata.creationTimestamp", meta["creationTimestamp"]
    return None


def event_type_of(event: dict[str, Any]) -> str:
    """What RTMH calls the Event: ``kubernetes:<reason>`` (BackOff, OOMKilling, ...)."""
    reason = _text(event.get("reason")) or "unknown"
    return f"kubernetes:{reason}"
