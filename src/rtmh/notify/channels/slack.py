"""Slack delivery through an incoming webhook (the URL is the credential, held as a Secret).

Slack answers 200 ``ok``; its errors are 4xx with a short reason (``invalid_payload``,
``invalid_token``, ``channel_is_archived``, ``no_service``), all permanent, and 429/5xx, which
are retried: the shared classification in :mod:`rtmh.notify.channels.base` fits as it is.
"""

from __future__ import annotations

import httpx

from rtmh.notify.channels.base import DeliveryResult, HttpPost, post
from rtmh.notify.channels.config import Channel, SlackSettings
from rtmh.notify.channels.webhook import USER_AGENT
from rtmh.notify.render import Notification, encode_json, render_slack


def build_request(settings: SlackSettings, notification: Notification) -> HttpPost:
    """The exact request sent to Slack."""
    body = encode_json(render_slack(notification))
    headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": USER_AGENT}
    return HttpPost(settings.url.reveal(), body, headers, settings.timeout_seconds)


async def deliver_slack(
    channel: Channel,
    settings: SlackSettings,
    notification: Notification,
    client: httpx.AsyncClient,
) -> DeliveryResult:
    """POST the message to the incoming webhook."""
    return await post(client, build_request(settings, notification), channel.secret_values())
