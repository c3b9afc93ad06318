"""Channels meet the target policy (:mod:`rtmh.notify.targets`) outside the notifier's loop.

* :func:`check_channel`: the write-time check of every URL a channel sends to, for whatever
  saves channels (the API, ``rtmh config apply``), after ``parse_channel`` accepted it.
* :func:`send_test`: one test notification through a channel, now, on a guarded client; what
  ``rtmh notify test`` and the API's test-send do. No outbox row, no retries.

Email channels have no URL: SMTP connections are not guarded (see :mod:`rtmh.notify.targets`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from rtmh.notify.channels import (
    Channel,
    ChannelConfigError,
    DeliveryResult,
    PagerDutySettings,
    SlackSettings,
    WebhookSettings,
    deliver,
)
from rtmh.notify.targets import (
    RESOLVE_TIMEOUT_S,
    Resolver,
    TargetPolicy,
    TargetRefused,
    check_url,
    guarded_client,
)
from rtmh.records import Notification


def channel_urls(channel: Channel) -> list[tuple[str, str]]:
    """(field, URL) for every URL ``channel`` sends to; ``field`` as ChannelConfigError names it.

    The URLs may be secret (Slack's): never show them, show the field.
    """
    settings = channel.settings
    if isinstance(settings, WebhookSettings):
        return [("config.url", settings.url)]
    if isinstance(settings, SlackSettings):
        where = "config.url" if channel.config.get("url") is not None else "secrets.url"
        return [(where, settings.url.reveal())]
    if isinstance(settings, PagerDutySettings):
        return [("config.base_url", settings.base_url)]
    return []


def check_channel(
    channel: Channel,
    policy: TargetPolicy,
    *,
    resolver: Resolver | None = None,
    timeout: float = RESOLVE_TIMEOUT_S,
) -> None:
    """Refuse a channel whose URLs the policy refuses: :class:`ChannelConfigError` naming the
    field, with the reason (e.g. ``config.url: 127.0.0.1 is a loopback address; add it to
    RTMH_ALLOWED_TARGETS to allow it``); its ``__cause__`` is the :class:`TargetRefused`.

    Resolves host names (each for at most ``timeout`` seconds): from async code, run it in a
    worker thread. The notifier checks again on every connection, so a channel that passes here
    and later resolves somewhere refused is still not reached.
    """
    for where, url in channel_urls(channel):
        try:
            check_url(url, policy, resolver=resolver, timeout=timeout)
        except TargetRefused as err:
            raise ChannelConfigError(channel.name, where, str(err)) from err


def sample_notification(
    channel: Channel, public_url: str, now: datetime | None = None
) -> Notification:
    """The notification a test send delivers: a sample incident, event ``test``, a fresh key."""
    return Notification.test(
        f"rtmh:test:{channel.name}:{uuid.uuid4().hex}",
        now=now or datetime.now(UTC),
        dashboard_url=f"{public_url.rstrip('/')}/",
    )


async def send_test(
    channel: Channel,
    policy: TargetPolicy,
    *,
    public_url: str,
    resolver: Resolver | None = None,
) -> DeliveryResult:
    """Send :func:`sample_notification` through ``channel`` once, where ``policy`` allows.

    Never raises for anything the receiver or the network does: a refused target is a failed,
    permanent result (``error`` starts with ``refused:``), like an HTTP 4xx.
    """
    async with guarded_client(policy, resolver=resolver) as client:
        return await deliver(channel, sample_notification(channel, public_url), client)
