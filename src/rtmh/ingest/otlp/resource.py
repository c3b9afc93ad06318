"""What every OTLP record takes from its resource and scope, and the pieces logs and metrics
share: the service and host, the event time, and the ``data`` JSON text.

A resource's attributes, service, host and scope are converted once per resource / scope, not
per record: a Collector batch holds hundreds of records per resource.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from rtmh.ingest.kubernetes import workload_of_pod
from rtmh.ingest.otlp.encodings import Encoding
from rtmh.ingest.shapes import TS_OUT_OF_RANGE, Clock, required_name
from rtmh.records import Rejected

#: where a record's service comes from, first found wins: resource attributes in this order,
#: then the record's (log record's or data point's) own ``service.name`` attribute. The
#: ``k8s.pod.labels.*`` keys are what the Collector's k8sattributes processor writes for pod
#: labels it is told to extract (``tag_name`` unset); ``k8s.pod.name`` is reduced to its
#: workload (``checkout-7d9f8c6b5-x2x9z`` -> ``checkout``, see ingest.kubernetes).
SERVICE_ATTRIBUTES: Final = (
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
#: resource attributes naming the host, first found wins
HOST_ATTRIBUTES: Final = ("host.name", "k8s.node.name")
#: the SDKs' service.name when none was configured (``unknown_service:<process name>``)
UNKNOWN_SERVICE: Final = "unknown_service"

NO_SERVICE: Final = (
    "no service: resource has no service.name or Kubernetes name attribute "
    "(service.name, k8s.pod.labels.app.kubernetes.io/name, k8s.pod.labels.app, "
    "k8s.deployment.name, ..., k8s.pod.name) and the record no service.name attribute"
)
#: a NUL character, which PostgreSQL text and jsonb cannot hold, was replaced by U+FFFD
NUL_REPLACED: Final = "nul_replaced"
_NUL: Final = "\x00"
_REPLACEMENT: Final = "\ufffd"

_encode: Final = msgspec.json.Encoder().encode


def resource_service(attributes: dict[str, Any]) -> str | Rejected | None:
    """The service a resource names, None when it names none (then each record may)."""
    for key in SERVICE_ATTRIBUTES:
        value = attributes.get(key)
        if value is not None:
            found = _check_name(f"resource.attributes.{key}", key, value)
            if found is not None:
                return found
    return None


def record_service(attributes: dict[str, Any]) -> str | Rejected:
    """A record's own ``service.name``, for a resource that names none."""
    value = attributes.get("service.name")
    found = None if value is None else _check_name("attributes.service.name", "service.name", value)
    return Rejected(NO_SERVICE) if found is None else found


def attributes_and_service(
    enc: Encoding, attributes: Any, service: str | None
) -> tuple[dict[str, Any], str] | Rejected:
    """A log record's or data point's attributes as plain JSON values, and its service: the
    resource's (``service``), else the record's own ``service.name`` attribute."""
    try:
        plain = enc.attributes(attributes)
    except RecursionError:
        return Rejected("attribute value nested too deeply")
    if service is not None:
        return plain, service
    found = record_service(plain)
    return found if isinstance(found, Rejected) else (plain, found)


def _check_name(field: str, key: str, value: object) -> str | Rejected | None:
    if type(value) is not str:
        return None
    name = value.strip()
    if not name or (key == "service.name" and name.startswith(UNKNOWN_SERVICE)):
        return None
    if key == "k8s.pod.name":
        name = workload_of_pod(name)
    return required_name(field, clean(name))


def resource_host(attributes: dict[str, Any]) -> str | None:
    for key in HOST_ATTRIBUTES:
        value = attributes.get(key)
        if type(value) is str and value.strip():
            return clean(value.strip())
    return None


def scope_of(scope: Any) -> dict[str, str] | None:
    """``{"name", "version"}`` as set, None for an empty scope."""
    found = {}
    if scope.name:
        found["name"] = scope.name
    if scope.version:
        found["version"] = scope.version
    return found or None


def clean(text: str) -> str:
    """``text`` without NUL (PostgreSQL text refuses it): replaced by U+FFFD."""
    return text.replace(_NUL, _REPLACEMENT) if _NUL in text else text


# --- time -------------------------------------------------------------------------------------


def event_time(clock: Clock, *nanos: int) -> tuple[float, tuple[str, ...]]:
    """The first non-zero of ``nanos`` (OTLP's "unset" is 0) in epoch seconds, rounded to the
    microsecond as Clock.event_time does; out of the believable range: the fallback and the
    ``ts_out_of_range`` flag, as for native messages. No time at all: the fallback."""
    for ns in nanos:
        if ns:
            seconds = ns / 1e9
            if clock.now - clock.max_past_s <= seconds <= clock.now + clock.max_future_s:
                return round(seconds, 6), ()
            return round(clock.fallback()[0], 6), TS_OUT_OF_RANGE
    when, flags = clock.fallback()
    return round(when, 6), flags


def rfc3339(seconds: float) -> datetime:
    """A datetime msgspec writes as RFC 3339 (``...T08:00:00.123456Z``)."""
    return datetime.fromtimestamp(seconds, UTC)


def nanos_time(ns: int) -> datetime | int:
    """An OTLP timestamp for ``data``: RFC 3339 when a datetime can hold it, else the number."""
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC)
    except (OverflowError, OSError, ValueError):
        return ns


# --- data -------------------------------------------------------------------------------------


def encode_data(data: dict[str, Any]) -> tuple[str, bool]:
    """The record's JSON text for raw_events.data, and whether a NUL had to be replaced.

    msgspec writes NUL as the escape ``\\u0000``, which jsonb refuses: its presence in the
    encoded bytes (rare) sends the tree through ``_without_nul`` and a second encoding.
    """
    encoded = _encode(data)
    if b"\\u0000" not in encoded:
        return encoded.decode(), False
    cleaned = _without_nul(data)
    again = _encode(cleaned)
    return again.decode(), again != encoded


def _without_nul(node: Any) -> Any:
    if type(node) is str:
        return clean(node)
    if type(node) is dict:
        return {clean(key): _without_nul(value) for key, value in node.items()}
    if type(node) is list:
        return [_without_nul(item) for item in node]
    return node
