"""PagerDuty channel: Events API v2 events and their delivery.

open/update/repeat trigger and resolve resolves, with ``dedup_key`` = the incident id, so
PagerDuty folds every notification of one RTMH incident into one PagerDuty incident and a retry
is harmless. PagerDuty answers 202 when it accepted the event, 400 for an invalid event or
routing key (permanent), 429 when rate limited and 5xx when unwell (both retried).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, NamedTuple

import httpx

from rtmh.notify.channels.base import USER_AGENT, DeliveryResult, HttpPost, post
from rtmh.notify.channels.common import cut, encode_json, headline, value_summary
from rtmh.notify.channels.config import Channel, PagerDutySettings
from rtmh.records import Notification, rfc3339

PAGERDUTY_SEVERITY: Final[Mapping[str, str]] = {
    "low": "info",
    "medium": "warning",
    "high": "error",
    "critical": "critical",
}

# PagerDuty rejects a longer summary, so it is cut here.
_SUMMARY_MAX: Final = 1024


class PagerDutyRequest(NamedTuple):
    """Where to POST (relative to the channel's base_url) and what."""

    path: str
    body: dict[str, Any]


def render_pagerduty(
    notification: Notification, routing_key: str, sent_at: datetime
) -> PagerDutyRequest:
    """open/update/repeat -> trigger, resolve -> resolve, both keyed by incident id.

    A 'test' goes out as a *change event*: it proves the routing key works without paging anyone
    (a test trigger would open a real PagerDuty incident that nothing ever resolves).
    """
    if notification.event == "test":
        return PagerDutyRequest("/v2/change/enqueue", _change(notification, routing_key, sent_at))
    incident = notification.incident
    if notification.event == "resolve":
        body: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": incident.id,
        }
        return PagerDutyRequest("/v2/enqueue", body)
    body = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": incident.id,
        "payload": _payload(notification),
        "client": "RTMH",
        "links": _links(notification),
    }
    if notification.dashboard_url:
        body["client_url"] = notification.dashboard_url
    return PagerDutyRequest("/v2/enqueue", body)


def build_request(
    settings: PagerDutySettings, notification: Notification, now: datetime
) -> HttpPost:
    """The exact request sent to ``{base_url}/v2/enqueue`` (or ``/v2/change/enqueue``)."""
    path, payload = render_pagerduty(notification, settings.routing_key.reveal(), now)
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    return HttpPost(
        settings.base_url + path, encode_json(payload), headers, settings.timeout_seconds
    )


async def deliver_pagerduty(
    channel: Channel,
    settings: PagerDutySettings,
    notification: Notification,
    client: httpx.AsyncClient,
    now: datetime,
) -> DeliveryResult:
    """Enqueue the event."""
    request = build_request(settings, notification, now)
    return await post(client, request, channel.secret_values())


def _payload(notification: Notification) -> dict[str, Any]:
    incident = notification.incident
    summary = f"{headline(notification)}: {incident.title} ({value_summary(incident)})"
    return {
        "summary": cut(summary, _SUMMARY_MAX),
        "source": incident.window_key or incident.service,
        "severity": PAGERDUTY_SEVERITY[incident.severity],
        "timestamp": rfc3339(incident.last_seen),
        "component": incident.metric_type or incident.rule,
        "class": incident.rule,
        "custom_details": _details(notification),
    }


def _details(notification: Notification) -> dict[str, Any]:
    details = notification.incident.to_dict()
    details["event"] = notification.event
    details["value_vs_threshold"] = value_summary(notification.incident)
    return details


def _links(notification: Notification) -> list[dict[str, str]]:
    links = [
        (notification.dashboard_url, "RTMH dashboard"),
        (notification.incident.runbook_url, "Runbook"),
    ]
    return [{"href": href, "text": text} for href, text in links if href]


def _change(notification: Notification, routing_key: str, sent_at: datetime) -> dict[str, Any]:
    incident = notification.incident
    return {
        "routing_key": routing_key,
        "payload": {
            "summary": cut(f"{headline(notification)}: {incident.title}", _SUMMARY_MAX),
            "timestamp": rfc3339(sent_at),
            "source": "rtmh",
            "custom_details": {"idempotency_key": notification.idempotency_key},
        },
        "links": _links(notification),
    }
