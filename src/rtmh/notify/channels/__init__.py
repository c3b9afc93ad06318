"""Channels: how one notification is rendered and sent to one receiver.

The DB-side notifier claims an ``alert_notifications`` row, builds a :class:`Channel` from the
``notification_channels`` row and a :class:`~rtmh.records.Notification`, awaits
:func:`deliver`, and records the :class:`DeliveryResult`. This package never touches the
database, never raises for anything a receiver does, and never lets a secret out.

One module per channel holds its pure ``render_*`` function and its ``deliver_*`` (webhook,
alertmanager, slack, pagerduty, email); :mod:`~rtmh.notify.channels.common` holds the wording
they share, :mod:`~rtmh.notify.channels.base` the HTTP exchange and retry classification,
:mod:`~rtmh.notify.channels.config` the validated channel settings.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import httpx

from rtmh.notify.channels.base import (
    BODY_READ_SECONDS,
    EXCERPT_CHARS,
    DeliveryResult,
    is_retryable_status,
    parse_retry_after,
)
from rtmh.notify.channels.config import (
    CHANNEL_TYPES,
    Channel,
    ChannelConfigError,
    ChannelSettings,
    ChannelType,
    EmailSettings,
    PagerDutySettings,
    Secret,
    SlackSettings,
    WebhookSettings,
    parse_channel,
    redact,
)
from rtmh.notify.channels.email import conversation_deadline, deliver_email
from rtmh.notify.channels.pagerduty import deliver_pagerduty
from rtmh.notify.channels.slack import deliver_slack
from rtmh.notify.channels.webhook import (
    deliver_webhook,
    sign,
    sign_standard,
    verify_signature,
    verify_standard_signature,
)
from rtmh.records import Notification

__all__ = [
    "CHANNEL_TYPES",
    "EXCERPT_CHARS",
    "Channel",
    "ChannelConfigError",
    "ChannelSettings",
    "ChannelType",
    "DeliveryResult",
    "EmailSettings",
    "PagerDutySettings",
    "Secret",
    "SlackSettings",
    "WebhookSettings",
    "deliver",
    "is_retryable_status",
    "max_attempt_seconds",
    "parse_channel",
    "parse_retry_after",
    "redact",
    "sign",
    "sign_standard",
    "verify_signature",
    "verify_standard_signature",
]

logger = logging.getLogger(__name__)


async def deliver(
    channel: Channel,
    notification: Notification,
    client: httpx.AsyncClient,
    *,
    now: datetime | None = None,
) -> DeliveryResult:
    """Render ``notification`` for ``channel`` and send it once.

    Returns a result for every receiver-side failure (timeouts, refused connections, HTTP
    4xx/5xx, SMTP errors); see :mod:`rtmh.notify.channels.base` for which are retryable.
    ``now`` (default: the current time) stamps ``sent_at``/``X-RTMH-Timestamp``/``Date``.
    ``client`` is used for HTTP channels and ignored by email; give it no base_url and leave
    redirects off (they are not followed either way). Outside tests it comes from
    :func:`rtmh.notify.targets.guarded_client`, which keeps channels off refused addresses.
    """
    sent_at = now or datetime.now(UTC)
    result = await _dispatch(channel, notification, client, sent_at)
    _log(channel, notification, result)
    return result


def max_attempt_seconds(channel: Channel) -> float:
    """Upper bound on how long one :func:`deliver` call takes: size claim leases above it."""
    settings = channel.settings
    if isinstance(settings, EmailSettings):
        return conversation_deadline(settings)
    # HTTP: the status within timeout_seconds, then a bounded read of the body's start.
    return settings.timeout_seconds + BODY_READ_SECONDS


async def _dispatch(
    channel: Channel, notification: Notification, client: httpx.AsyncClient, now: datetime
) -> DeliveryResult:
    settings = channel.settings
    if isinstance(settings, WebhookSettings):
        return await deliver_webhook(channel, settings, notification, client, now)
    if isinstance(settings, SlackSettings):
        return await deliver_slack(channel, settings, notification, client)
    if isinstance(settings, PagerDutySettings):
        return await deliver_pagerduty(channel, settings, notification, client, now)
    return await deliver_email(channel, settings, notification, now)


def _log(channel: Channel, notification: Notification, result: DeliveryResult) -> None:
    # Results are already scrubbed; the channel name and ids are not secret.
    if result.ok:
        logger.debug(
            "notification %s (%s, attempt %d) delivered to %s: %s",
            notification.id,
            notification.event,
            notification.attempt,
            channel.name,
            result.http_status,
        )
        return
    logger.info(
        "notification %s (%s, attempt %d) to %s failed (%s): %s",
        notification.id,
        notification.event,
        notification.attempt,
        channel.name,
        "will retry" if result.retryable else "permanent",
        result.error,
    )
