"""Slack channel: the incoming-webhook message (Block Kit) and its delivery. The webhook URL is
the credential, held as a Secret.

Slack answers 200 ``ok``; its errors are 4xx with a short reason (``invalid_payload``,
``invalid_token``, ``channel_is_archived``, ``no_service``), all permanent, and 429/5xx, which
are retried: the shared classification in :mod:`rtmh.notify.channels.base` fits as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import httpx

from rtmh.notify.channels.base import USER_AGENT, DeliveryResult, HttpPost, post
from rtmh.notify.channels.common import cut, encode_json, format_value, headline, value_summary
from rtmh.notify.channels.config import Channel, SlackSettings
from rtmh.records import Notification, rfc3339

_EMOJI: Final[Mapping[str, str]] = {
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}

# Limits of Slack's API: longer values are rejected, so they are cut here.
_HEADER_MAX: Final = 150
_TEXT_MAX: Final = 3000
_FIELD_MAX: Final = 2000


def render_slack(notification: Notification) -> dict[str, Any]:
    """Incoming-webhook message: ``text`` for notifications and old clients, ``blocks`` to read."""
    title = f"{_emoji(notification)} {_escape(headline(notification))}"
    fallback = f"{title} ({_escape(value_summary(notification.incident))})"
    return {"text": cut(fallback, _TEXT_MAX), "blocks": _blocks(notification, title)}


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


def _blocks(notification: Notification, title: str) -> list[dict[str, Any]]:
    incident = notification.incident
    # Slack rejects an empty header, so a blank title falls back to the rule name.
    header = cut(incident.title or incident.rule, _HEADER_MAX)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(header)},
        _section(title),
        {"type": "section", "fields": [_mrkdwn(text) for text in _fields(notification)]},
    ]
    if incident.description:
        blocks.append(_section(_escape(incident.description)))
    buttons = _buttons(notification)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [_mrkdwn(_context(notification))]})
    return blocks


def _emoji(notification: Notification) -> str:
    if notification.event == "resolve":
        return ":white_check_mark:"
    return _EMOJI[notification.incident.severity]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(cut(text, _TEXT_MAX))}


def _fields(notification: Notification) -> list[str]:
    incident = notification.incident
    pairs = [
        ("Severity", incident.severity.upper()),
        ("Service", incident.service),
        ("Rule", incident.rule),
        ("Value vs threshold", value_summary(incident)),
        ("Status", incident.status),
        ("Peak", format_value(incident.peak_value)),
    ]
    return [cut(f"*{name}*\n{_escape(value)}", _FIELD_MAX) for name, value in pairs]


def _buttons(notification: Notification) -> list[dict[str, Any]]:
    links = [
        ("Open dashboard", notification.dashboard_url, "dashboard"),
        ("Runbook", notification.incident.runbook_url, "runbook"),
    ]
    return [
        {"type": "button", "text": _plain(label), "url": url, "action_id": action}
        for label, url, action in links
        if url
    ]


def _context(notification: Notification) -> str:
    incident = notification.incident
    parts = [f"RTMH incident `{incident.id}`", f"first seen {rfc3339(incident.first_seen)}"]
    if incident.resolved_at is not None:
        parts.append(f"resolved {rfc3339(incident.resolved_at)}")
    if notification.dashboard_url:
        parts.append(f"<{notification.dashboard_url}|dashboard>")
    if incident.runbook_url:
        parts.append(f"<{incident.runbook_url}|runbook>")
    return " · ".join(parts)


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters and asks for exactly this escaping.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}
