"""Generic webhook (and Alertmanager-compatible webhook) channel: the body and its delivery,
with request signing.

Headers on every request: ``Content-Type: application/json``, ``X-RTMH-Idempotency-Key`` (the
same on every retry: receivers deduplicate on it) and ``X-RTMH-Event``. Two signatures, each
optional, both allowed at once (so receivers can move from one to the other):

* **Standard Webhooks** (https://www.standardwebhooks.com, spec 1.0.0), with
  ``secrets.standard_webhooks_secret`` = ``whsec_<base64 of 24 to 64 random bytes>``:
  ``webhook-id`` (the idempotency key, ``.`` written ``%2E`` because the spec keeps dots out of
  the signed id; the same on every retry), ``webhook-timestamp`` (Unix seconds of this attempt)
  and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``. Id and
  timestamp are signed with the body, so a receiver that checks the timestamp against its clock
  (:func:`verify_standard_signature`, five minutes by default) and remembers the ids it saw
  within that window rejects replays, and any off-the-shelf Standard Webhooks library verifies
  these requests.
* **RTMH's own**, with ``secrets.hmac_secret``: ``X-RTMH-Signature: sha256=<hex HMAC-SHA256 of
  the exact body bytes>`` and ``X-RTMH-Timestamp`` (Unix seconds of the send). Only the body
  is signed, so the timestamp header proves nothing; for replay protection a receiver checks
  the generic body's signed ``sent_at`` against its clock and deduplicates on the idempotency
  key (the Alertmanager body has no ``sent_at``: prefer Standard Webhooks there).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import httpx

from rtmh.notify.channels.alertmanager import render_alertmanager
from rtmh.notify.channels.base import USER_AGENT, DeliveryResult, HttpPost, post
from rtmh.notify.channels.common import encode_json
from rtmh.notify.channels.config import Channel, WebhookSettings, decode_standard_secret
from rtmh.records import Notification, rfc3339

IDEMPOTENCY_HEADER = "X-RTMH-Idempotency-Key"
EVENT_HEADER = "X-RTMH-Event"
SIGNATURE_HEADER = "X-RTMH-Signature"
TIMESTAMP_HEADER = "X-RTMH-Timestamp"
_SIGNATURE_PREFIX = "sha256="
# Standard Webhooks' header names, lower-case as the spec writes them
STANDARD_ID_HEADER = "webhook-id"
STANDARD_TIMESTAMP_HEADER = "webhook-timestamp"
STANDARD_SIGNATURE_HEADER = "webhook-signature"
#: the spec's identifier of a symmetric (HMAC-SHA256) signature
_STANDARD_VERSION = "v1"
#: how far a Standard Webhooks timestamp may be from the receiver's clock by default
STANDARD_TOLERANCE_S: Final = 300

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


def standard_webhook_id(idempotency_key: str) -> str:
    """The ``webhook-id`` of a notification: its idempotency key, with no ``.`` in it.

    The spec keeps ``.`` out of the id because the signed content joins id, timestamp and body
    with dots; channel names (part of the key) may contain one. ``%`` is escaped first, so the
    key can be read back (``%2E`` -> ``.``, ``%25`` -> ``%``).
    """
    return idempotency_key.replace("%", "%25").replace(".", "%2E")


def _standard_key(secret: str | bytes) -> bytes:
    return secret if isinstance(secret, bytes) else decode_standard_secret(secret)


def sign_standard(secret: str | bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``.

    ``secret``: the ``whsec_...`` string, or the key bytes it holds.
    """
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return f"{_STANDARD_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify_standard_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | float,
    tolerance: float = STANDARD_TOLERANCE_S,
) -> bool:
    """True when ``headers`` carry a valid Standard Webhooks signature of ``body``.

    For receivers (and tests). ``headers``: any mapping, names in any case; ``body``: the bytes
    as received, before any JSON parsing; ``now``: the receiver's clock (datetime or Unix
    seconds). False when a header is missing, the timestamp is more than ``tolerance`` seconds
    from ``now`` either way (a replayed request), or no ``v1`` signature in the
    space-separated list matches (compared in constant time). A receiver should also remember
    the ``webhook-id`` values it accepted within the tolerance and refuse them a second time.
    """
    msg_id = _header(headers, STANDARD_ID_HEADER)
    stamp = _header(headers, STANDARD_TIMESTAMP_HEADER)
    signatures = _header(headers, STANDARD_SIGNATURE_HEADER)
    if not msg_id or not stamp or not signatures or not stamp.isascii() or not stamp.isdigit():
        return False
    clock = now.timestamp() if isinstance(now, datetime) else float(now)
    if abs(clock - int(stamp)) > tolerance:
        return False
    try:
        expected = sign_standard(secret, msg_id, stamp, body).partition(",")[2]
    except ValueError:
        return False
    matched = False
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != _STANDARD_VERSION:
            continue  # e.g. v1a (asymmetric): not ours to check
        # every candidate is compared, so the time taken does not say which one matched
        matched |= hmac.compare_digest(expected.encode(), value.encode("utf-8", "replace"))
    return matched


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


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
    timestamp = int(now.timestamp())
    if settings.hmac_secret is not None:
        headers[SIGNATURE_HEADER] = sign(settings.hmac_secret.reveal(), body)
        headers[TIMESTAMP_HEADER] = str(timestamp)
    if settings.standard_webhooks_secret is not None:
        msg_id = standard_webhook_id(notification.idempotency_key)
        headers[STANDARD_ID_HEADER] = msg_id
        headers[STANDARD_TIMESTAMP_HEADER] = str(timestamp)
        headers[STANDARD_SIGNATURE_HEADER] = sign_standard(
            settings.standard_webhooks_secret.reveal(), msg_id, timestamp, body
        )
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
