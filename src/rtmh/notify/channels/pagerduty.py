"""PagerDuty Events API v2 delivery.

open/update/repeat trigger and resolve resolves, with ``dedup_key`` = the incident id, so
PagerDuty folds every notification of one RTMH incident into one PagerDuty incident and a retry
is harmless. PagerDuty answers 202 when it accepted the event, 400 for an invalid event or
routing key (permanent), 429 when rate limited and 5xx when unwell (both retried).
"""

from __future__ import annotations

from datetime import datetime

import httpx

from rtmh.notify.channels.base import DeliveryResult, HttpPost, post
from rtmh.notify.channels.config import Channel, PagerDutySettings
from rtmh.notify.channels.webhook import USER_AGENT
from rtmh.notify.render import Notification, encode_json, render_pagerduty


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
