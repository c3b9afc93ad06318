"""Generic webhook (and Alertmanager-compatible webhook) channel: the body and its delivery,
with HMAC request signing.

Headers on every request: ``Content-Type: application/json``, ``X-RTMH-Idempotency-Key`` (the
same on every retry: receivers deduplicate on it) and ``X-RTMH-Event``. With ``secrets.hmac_secret``
set, also ``X-RTMH-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>`` and
``X-RTMH-Timestamp`` (Unix seconds of the send). Only the body is signed, so a receiver that
wants replay protection checks the generic body's signed ``sent_at`` against its clock and
deduplicates on the idempotency key.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, Final

import httpx

from rtmh.notify.channels.alertmanager import render_alertmanager
from rtmh.notify.channels.base import USER_AGENT, DeliveryResult, HttpPost, post
from rtmh.notify.channels.common import encode_json
from rtmh.notify.channels.config import Channel, WebhookSettings
from rtmh.records import Notification, rfc3339

IDEMPOTENCY_HEADER = "X-RTMH-Idempotency-Key"
EVENT_HEADER = "X-RTMH-Event"
SIGNATURE_HEADER = "X-RTMH-Signature"
TIMESTAMP_HEADER = "X-RTMH-Timestamp"
_SIGNATURE_PREFIX = "sha256="

#: version of the generic webhook body; bump on any incompatible change
WEBHOOK_SCHEMA_VERSION: Final = "1"


def render_webhook(notification: Notification, sent_at: datetime) -> dict[str, Any]:
    """The generic webhook body (schema version 1, documented field by field in the README)."""
    incident = notification.incident.to_dict()
    incident["dashboard_url"] = notification.dashboard_url
    return {
        "version": WEBHOOK_SCHEMA_VERSION,
        "event": notification.event,
        "idempotency_key": notification.idempotency_key,
        "notification_id": notification.id,
        "attempt": notification.attempt,
        "sent_at": rfc3339(sent_at),
        "incident": incident,
    }


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-RTMH-Signature`` value for ``body``: ``sha256=<hex digest>``."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return _SIGNATURE_PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify_signature(secret: str | bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` under ``secret``.

    Constant-time comparison, so a receiver using it does not leak how much of a forged
    signature was right.
    """
    if not header:
        return False
    expected = sign(secret, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8"))


def build_request(
    channel: Channel, settings: WebhookSettings, notification: Notification, now: datetime
) -> HttpPost:
    """The exact request a webhook channel sends (exposed so tests and previews share it)."""
    if settings.alertmanager_format:
        payload = render_alertmanager(notification, receiver=channel.name)
    else:
        payload = render_webhook(notification, sent_at=now)
    body = encode_json(payload)
    headers = {**settings.headers}
    headers.update({name: value.reveal() for name, value in settings.secret_headers.items()})
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: notification.idempotency_key,
            EVENT_HEADER: notification.event,
        }
    )
    if settings.hmac_secret is not None:
        headers[SIGNATURE_HEADER] = sign(settings.hmac_secret.reveal(), body)
        headers[TIMESTAMP_HEADER] = str(int(now.timestamp()))
    return HttpPost(settings.url, body, headers, settings.timeout_seconds)


async def deliver_webhook(
    channel: Channel,
    settings: WebhookSettings,
    notification: Notification,
    client: httpx.AsyncClient,
    now: datetime,
) -> DeliveryResult:
    """POST the notification; any 2xx counts as delivered."""
    request = build_request(channel, settings, notification, now)
    return await post(client, request, channel.secret_values())
