"""The Alertmanager-compatible webhook body (version 4), for receivers written for Alertmanager.

Sent like any webhook (:mod:`rtmh.notify.channels.webhook`, ``alertmanager_format``; channel
type ``alertmanager``): one alert per incident, with the labels, fingerprint and zero ``endsAt``
such receivers test for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from rtmh.notify.channels.common import format_value, value_summary
from rtmh.records import IncidentSnapshot, Notification, rfc3339

# Alertmanager sends Go's zero time as endsAt of a firing alert; receivers test for it.
_ZERO_TIME: Final = "0001-01-01T00:00:00Z"


def render_alertmanager(notification: Notification, receiver: str) -> dict[str, Any]:
    """Alertmanager's webhook body, one alert per incident, for receivers written for it."""
    incident = notification.incident
    status = "resolved" if notification.event == "resolve" else "firing"
    labels = alertmanager_labels(incident)
    annotations = _annotations(notification)
    ends_at = _ZERO_TIME
    if status == "resolved":
        ends_at = rfc3339(incident.resolved_at or incident.last_seen)
    group_labels = {key: labels[key] for key in ("alertname", "service")}
    alert = {
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": rfc3339(incident.first_seen),
        "endsAt": ends_at,
        "generatorURL": notification.dashboard_url or "",
        "fingerprint": label_fingerprint(labels),
    }
    return {
        "version": "4",
        "groupKey": "{}:" + _go_label_set(group_labels),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": _origin(notification.dashboard_url),
        "alerts": [alert],
    }


def alertmanager_labels(incident: IncidentSnapshot) -> dict[str, str]:
    """The identifying labels; stable over the incident's life so the fingerprint is too."""
    return {
        "alertname": incident.rule,
        "service": incident.window_key or "",
        "severity": incident.severity,
        "source": incident.source,
    }


def _annotations(notification: Notification) -> dict[str, str]:
    incident = notification.incident
    annotations = {
        "summary": incident.title,
        "description": incident.description or f"{incident.rule}: {value_summary(incident)}",
        "runbook_url": incident.runbook_url or "",
        "value": format_value(incident.last_value),
        "threshold": format_value(incident.threshold),
        "rtmh_incident_id": incident.id,
        "rtmh_event": notification.event,
        "dashboard_url": notification.dashboard_url or "",
    }
    # Alertmanager leaves unset annotations out; receivers test presence, not emptiness.
    return {key: value for key, value in annotations.items() if value}


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus' label-set fingerprint (FNV-1a 64 over sorted name/value pairs), as hex.

    Same algorithm as ``model.LabelsToSignature``, so the value equals what Alertmanager itself
    would send for these labels.
    """
    offset, prime, separator = 14695981039346656037, 1099511628211, 0xFF
    digest = offset
    for name in sorted(labels):
        for part in (name.encode("utf-8"), labels[name].encode("utf-8")):
            for byte in (*part, separator):
                digest = ((digest ^ byte) * prime) & 0xFFFFFFFFFFFFFFFF
    return f"{digest:016x}"


def _go_label_set(labels: Mapping[str, str]) -> str:
    # Go's LabelSet.String(): sorted, `name="value"` with Go string quoting, ", " between.
    pairs = (f"{name}={json.dumps(labels[name], ensure_ascii=False)}" for name in sorted(labels))
    return "{" + ", ".join(pairs) + "}"


def _origin(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
