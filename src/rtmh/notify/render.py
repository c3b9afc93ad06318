"""Rendering: one notification turned into what each kind of receiver expects.

Everything here is pure (no I/O, no clock: callers pass ``sent_at``), so every payload shape is
unit-tested without a network, and the channel modules in ``rtmh.notify.channels`` only move
bytes. The types at the top (:class:`IncidentSnapshot`, :class:`Notification`) are the input the
DB-side notifier builds from an ``alert_notifications`` row.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any, Final, Literal, NamedTuple, get_args
from urllib.parse import urlsplit

NotificationEvent = Literal["open", "update", "repeat", "resolve", "test"]
Severity = Literal["low", "medium", "high", "critical"]

EVENTS: Final[tuple[str, ...]] = get_args(NotificationEvent)
SEVERITIES: Final[tuple[str, ...]] = get_args(Severity)

#: window_key of the aggregate over every service (see DESIGN.md, sliding windows)
GLOBAL_WINDOW_KEY: Final = "__all__"

#: version of the generic webhook body; bump on any incompatible change
WEBHOOK_SCHEMA_VERSION: Final = "1"

PAGERDUTY_SEVERITY: Final[Mapping[str, str]] = {
    "low": "info",
    "medium": "warning",
    "high": "error",
    "critical": "critical",
}

_SLACK_EMOJI: Final[Mapping[str, str]] = {
    "low": ":large_blue_circle:",
    "medium": ":large_yellow_circle:",
    "high": ":large_orange_circle:",
    "critical": ":red_circle:",
}

# Alertmanager sends Go's zero time as endsAt of a firing alert; receivers test for it.
_ALERTMANAGER_ZERO_TIME: Final = "0001-01-01T00:00:00Z"

# Limits of the receiving APIs: longer values are rejected, so they are cut here.
_PAGERDUTY_SUMMARY_MAX: Final = 1024
_SLACK_HEADER_MAX: Final = 150
_SLACK_TEXT_MAX: Final = 3000
_SLACK_FIELD_MAX: Final = 2000


# ------------------------------------------------------------------------------------------------
# Input types
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IncidentSnapshot:
    """The incident as it was when the notification was queued.

    ``to_dict()`` is the ``incident`` object of the webhook body and round-trips through
    ``from_dict()``, so the rules engine can store it in ``alert_notifications.payload`` and a
    retried 'open' still describes the opening, even after the rule is renamed or deleted.
    """

    id: str
    title: str
    severity: Severity
    status: str
    source: str
    window_key: str | None
    rule_name: str | None
    first_seen: datetime
    last_seen: datetime
    last_value: float | None = None
    threshold: float | None = None
    condition: str | None = None
    peak_value: float | None = None
    resolved_at: datetime | None = None
    description: str | None = None
    runbook_url: str | None = None
    metric_type: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"incident severity must be one of {SEVERITIES}")

    @property
    def service(self) -> str:
        """The service for people: the window key, or a phrase for the global key."""
        if self.window_key is None or self.window_key == "":
            return "unknown service"
        if self.window_key == GLOBAL_WINDOW_KEY:
            return "all services"
        return self.window_key

    @property
    def rule(self) -> str:
        """The rule name, or the title when the rule is unknown (deleted before the snapshot)."""
        return self.rule_name or self.title

    @classmethod
    def from_rows(
        cls, incident: Mapping[str, Any], rule: Mapping[str, Any] | None = None
    ) -> IncidentSnapshot:
        """Build from an ``incidents`` row and its ``alert_rules`` row (None once deleted).

        Without a rule row, ``incident.metadata`` keys ``rule_name``, ``condition``,
        ``metric_type`` and ``runbook_url`` are used: incidents has no columns for them.
        """
        metadata: Mapping[str, Any] = incident.get("metadata") or {}
        known = rule if rule is not None else {}

        def from_rule(rule_key: str, metadata_key: str) -> Any:
            value = known.get(rule_key)
            return value if value is not None else metadata.get(metadata_key)

        return cls(
            id=str(incident["id"]),
            title=str(incident["title"]),
            severity=incident["severity"],
            status=str(incident["status"]),
            source=str(incident["source"]),
            window_key=incident.get("window_key"),
            rule_name=from_rule("name", "rule_name"),
            first_seen=_as_utc(incident["first_seen"]),
            last_seen=_as_utc(incident["last_seen"]),
            last_value=_finite(incident.get("last_value")),
            threshold=_finite(_first(incident.get("threshold"), known.get("threshold"))),
            condition=from_rule("condition", "condition"),
            peak_value=_finite(incident.get("peak_value")),
            resolved_at=_optional_utc(incident.get("resolved_at")),
            description=_first(incident.get("description"), known.get("description")),
            runbook_url=from_rule("runbook_url", "runbook_url"),
            metric_type=from_rule("metric_type", "metric_type"),
            metadata=dict(metadata),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; the public names of the webhook schema (``service``, ``rule``)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "severity": self.severity,
            "status": self.status,
            "source": self.source,
            "service": self.window_key,
            "rule": self.rule_name,
            "metric_type": self.metric_type,
            "condition": self.condition,
            "threshold": _finite(self.threshold),
            "last_value": _finite(self.last_value),
            "peak_value": _finite(self.peak_value),
            "first_seen": rfc3339(self.first_seen),
            "last_seen": rfc3339(self.last_seen),
            "resolved_at": rfc3339(self.resolved_at) if self.resolved_at else None,
            "runbook_url": self.runbook_url,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IncidentSnapshot:
        """Inverse of :meth:`to_dict`."""
        resolved = data.get("resolved_at")
        return cls(
            id=str(data["id"]),
            title=str(data["title"]),
            severity=data["severity"],
            status=str(data["status"]),
            source=str(data["source"]),
            window_key=data.get("service"),
            rule_name=data.get("rule"),
            first_seen=_parse_time(data["first_seen"]),
            last_seen=_parse_time(data["last_seen"]),
            last_value=_finite(data.get("last_value")),
            threshold=_finite(data.get("threshold")),
            condition=data.get("condition"),
            peak_value=_finite(data.get("peak_value")),
            resolved_at=_parse_time(resolved) if resolved else None,
            description=data.get("description"),
            runbook_url=data.get("runbook_url"),
            metric_type=data.get("metric_type"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification to one channel: an ``alert_notifications`` row plus its incident."""

    id: int
    idempotency_key: str
    event: NotificationEvent
    #: the attempt being made, 1 for the first
    attempt: int
    incident: IncidentSnapshot
    #: link to this incident on the dashboard, when the hub knows its public URL
    dashboard_url: str | None = None

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"notification event must be one of {EVENTS}")
        if self.attempt < 1:
            raise ValueError("notification attempt numbers start at 1")
        if not self.idempotency_key:
            raise ValueError("notification idempotency_key must not be empty")

    @classmethod
    def from_row(
        cls,
        row: Mapping[str, Any],
        incident: IncidentSnapshot,
        *,
        attempt: int,
        dashboard_url: str | None = None,
    ) -> Notification:
        """Build from an ``alert_notifications`` row (id, idempotency_key, event)."""
        return cls(
            id=int(row["id"]),
            idempotency_key=str(row["idempotency_key"]),
            event=row["event"],
            attempt=attempt,
            incident=incident,
            dashboard_url=dashboard_url,
        )

    @classmethod
    def test(
        cls,
        idempotency_key: str,
        *,
        now: datetime,
        notification_id: int = 0,
        attempt: int = 1,
        dashboard_url: str | None = None,
    ) -> Notification:
        """A 'test' notification (``incident_id`` is NULL): a made-up low-severity incident."""
        incident = IncidentSnapshot(
            id="00000000-0000-0000-0000-000000000000",
            title="RTMH test notification",
            severity="low",
            status="open",
            source="rtmh",
            window_key="rtmh",
            rule_name="rtmh_test",
            first_seen=_as_utc(now),
            last_seen=_as_utc(now),
            description="A test sent by RTMH to check this channel. No action is needed.",
        )
        return cls(notification_id, idempotency_key, "test", attempt, incident, dashboard_url)


# ------------------------------------------------------------------------------------------------
# Shared wording
# ------------------------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, ``Z`` suffix: what Alertmanager and PagerDuty both accept."""
    return _as_utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_value(value: float | None) -> str:
    """Four significant digits: enough to compare with a threshold, short enough to read."""
    finite = _finite(value)
    return "n/a" if finite is None else f"{finite:.4g}"


def value_summary(incident: IncidentSnapshot) -> str:
    """'0.1234 > 0.05': the last value against the rule's condition."""
    value = format_value(incident.last_value)
    if incident.threshold is None:
        return value
    if incident.condition:
        return f"{value} {incident.condition} {format_value(incident.threshold)}"
    return f"{value} (threshold {format_value(incident.threshold)})"


def headline(notification: Notification) -> str:
    """'[HIGH] open: high_error_rate on checkout': the one line every channel leads with."""
    incident = notification.incident
    return (
        f"[{incident.severity.upper()}] {notification.event}: {incident.rule} on {incident.service}"
    )


def email_subject(notification: Notification) -> str:
    """'[RTMH][HIGH] open: high_error_rate on checkout'."""
    return _one_line(f"[RTMH]{headline(notification)}")


def encode_json(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes that are signed are the bytes that are sent."""
    return json.dumps(
        payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, sort_keys=True
    ).encode("utf-8")


# ------------------------------------------------------------------------------------------------
# Generic webhook
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# Slack incoming webhook
# ------------------------------------------------------------------------------------------------


def render_slack(notification: Notification) -> dict[str, Any]:
    """Incoming-webhook message: ``text`` for notifications and old clients, ``blocks`` to read."""
    title = f"{_slack_emoji(notification)} {_slack_escape(headline(notification))}"
    fallback = f"{title} ({_slack_escape(value_summary(notification.incident))})"
    return {"text": _cut(fallback, _SLACK_TEXT_MAX), "blocks": _slack_blocks(notification, title)}


def _slack_blocks(notification: Notification, title: str) -> list[dict[str, Any]]:
    incident = notification.incident
    # Slack rejects an empty header, so a blank title falls back to the rule name.
    header = _cut(incident.title or incident.rule, _SLACK_HEADER_MAX)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": _plain(header)},
        _slack_section(title),
        {"type": "section", "fields": [_mrkdwn(text) for text in _slack_fields(notification)]},
    ]
    if incident.description:
        blocks.append(_slack_section(_slack_escape(incident.description)))
    buttons = _slack_buttons(notification)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons})
    blocks.append({"type": "context", "elements": [_mrkdwn(_slack_context(notification))]})
    return blocks


def _slack_emoji(notification: Notification) -> str:
    if notification.event == "resolve":
        return ":white_check_mark:"
    return _SLACK_EMOJI[notification.incident.severity]


def _slack_section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(_cut(text, _SLACK_TEXT_MAX))}


def _slack_fields(notification: Notification) -> list[str]:
    incident = notification.incident
    pairs = [
        ("Severity", incident.severity.upper()),
        ("Service", incident.service),
        ("Rule", incident.rule),
        ("Value vs threshold", value_summary(incident)),
        ("Status", incident.status),
        ("Peak", format_value(incident.peak_value)),
    ]
    return [_cut(f"*{name}*\n{_slack_escape(value)}", _SLACK_FIELD_MAX) for name, value in pairs]


def _slack_buttons(notification: Notification) -> list[dict[str, Any]]:
    links = [
        ("Open dashboard", notification.dashboard_url, "dashboard"),
        ("Runbook", notification.incident.runbook_url, "runbook"),
    ]
    return [
        {"type": "button", "text": _plain(label), "url": url, "action_id": action}
        for label, url, action in links
        if url
    ]


def _slack_context(notification: Notification) -> str:
    incident = notification.incident
    parts = [f"RTMH incident `{incident.id}`", f"first seen {rfc3339(incident.first_seen)}"]
    if incident.resolved_at is not None:
        parts.append(f"resolved {rfc3339(incident.resolved_at)}")
    if notification.dashboard_url:
        parts.append(f"<{notification.dashboard_url}|dashboard>")
    if incident.runbook_url:
        parts.append(f"<{incident.runbook_url}|runbook>")
    return " · ".join(parts)


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters and asks for exactly this escaping.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


# ------------------------------------------------------------------------------------------------
# PagerDuty Events API v2
# ------------------------------------------------------------------------------------------------


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
        return PagerDutyRequest(
            "/v2/change/enqueue", _pagerduty_change(notification, routing_key, sent_at)
        )
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
        "payload": _pagerduty_payload(notification),
        "client": "RTMH",
        "links": _pagerduty_links(notification),
    }
    if notification.dashboard_url:
        body["client_url"] = notification.dashboard_url
    return PagerDutyRequest("/v2/enqueue", body)


def _pagerduty_payload(notification: Notification) -> dict[str, Any]:
    incident = notification.incident
    summary = f"{headline(notification)}: {incident.title} ({value_summary(incident)})"
    return {
        "summary": _cut(summary, _PAGERDUTY_SUMMARY_MAX),
        "source": incident.window_key or incident.service,
        "severity": PAGERDUTY_SEVERITY[incident.severity],
        "timestamp": rfc3339(incident.last_seen),
        "component": incident.metric_type or incident.rule,
        "class": incident.rule,
        "custom_details": _pagerduty_details(notification),
    }


def _pagerduty_details(notification: Notification) -> dict[str, Any]:
    details = notification.incident.to_dict()
    details["event"] = notification.event
    details["value_vs_threshold"] = value_summary(notification.incident)
    return details


def _pagerduty_links(notification: Notification) -> list[dict[str, str]]:
    links = [
        (notification.dashboard_url, "RTMH dashboard"),
        (notification.incident.runbook_url, "Runbook"),
    ]
    return [{"href": href, "text": text} for href, text in links if href]


def _pagerduty_change(
    notification: Notification, routing_key: str, sent_at: datetime
) -> dict[str, Any]:
    incident = notification.incident
    return {
        "routing_key": routing_key,
        "payload": {
            "summary": _cut(f"{headline(notification)}: {incident.title}", _PAGERDUTY_SUMMARY_MAX),
            "timestamp": rfc3339(sent_at),
            "source": "rtmh",
            "custom_details": {"idempotency_key": notification.idempotency_key},
        },
        "links": _pagerduty_links(notification),
    }


# ------------------------------------------------------------------------------------------------
# Alertmanager webhook (version 4)
# ------------------------------------------------------------------------------------------------


def render_alertmanager(notification: Notification, receiver: str) -> dict[str, Any]:
    """Alertmanager's webhook body, one alert per incident, for receivers written for it."""
    incident = notification.incident
    status = "resolved" if notification.event == "resolve" else "firing"
    labels = alertmanager_labels(incident)
    annotations = _alertmanager_annotations(notification)
    ends_at = _ALERTMANAGER_ZERO_TIME
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


def _alertmanager_annotations(notification: Notification) -> dict[str, str]:
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


# ------------------------------------------------------------------------------------------------
# Email
# ------------------------------------------------------------------------------------------------


def message_id(idempotency_key: str, from_addr: str) -> str:
    """Message-ID derived from the idempotency key: a retried send is the same message."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<rtmh.{digest}@{_mail_domain(from_addr)}>"


def thread_id(incident_id: str, from_addr: str) -> str:
    """A per-incident id that every notification references, so mail clients thread them."""
    return f"<rtmh.incident.{incident_id}@{_mail_domain(from_addr)}>"


def render_email(
    notification: Notification, from_addr: str, to_addrs: tuple[str, ...], sent_at: datetime
) -> EmailMessage:
    """multipart/alternative: plain text first, HTML second (clients show the last they can)."""
    message = EmailMessage()
    message["Subject"] = email_subject(notification)
    message["From"] = from_addr
    message["To"] = ", ".join(to_addrs)
    message["Date"] = format_datetime(_as_utc(sent_at))
    message["Message-ID"] = message_id(notification.idempotency_key, from_addr)
    thread = thread_id(notification.incident.id, from_addr)
    message["In-Reply-To"] = thread
    message["References"] = thread
    # RFC 3834: stops vacation auto-replies from answering a monitoring system.
    message["Auto-Submitted"] = "auto-generated"
    message["X-RTMH-Idempotency-Key"] = _one_line(notification.idempotency_key)
    message["X-RTMH-Event"] = notification.event
    message.set_content(email_text(notification))
    message.add_alternative(email_html(notification), subtype="html")
    return message


def email_rows(notification: Notification) -> list[tuple[str, str]]:
    """The facts shown in both email parts, in order."""
    incident = notification.incident
    rows = [
        ("Severity", incident.severity.upper()),
        ("Service", incident.service),
        ("Rule", incident.rule),
        ("Value vs threshold", value_summary(incident)),
        ("Peak", format_value(incident.peak_value)),
        ("Status", incident.status),
        ("Event", notification.event),
        ("First seen", rfc3339(incident.first_seen)),
        ("Last seen", rfc3339(incident.last_seen)),
    ]
    if incident.resolved_at is not None:
        rows.append(("Resolved at", rfc3339(incident.resolved_at)))
    rows.append(("Incident", incident.id))
    if notification.dashboard_url:
        rows.append(("Dashboard", notification.dashboard_url))
    if incident.runbook_url:
        rows.append(("Runbook", incident.runbook_url))
    return rows


def email_text(notification: Notification) -> str:
    """The plain-text part."""
    incident = notification.incident
    width = max(len(name) for name, _ in email_rows(notification))
    lines = [headline(notification), "", incident.title]
    if incident.description:
        lines += ["", incident.description]
    lines.append("")
    lines += [f"{name + ':':<{width + 1}} {value}" for name, value in email_rows(notification)]
    lines += ["", "-- ", "Sent by RTMH. Idempotency key: " + notification.idempotency_key]
    return "\n".join(lines) + "\n"


def email_html(notification: Notification) -> str:
    """The HTML part: every value escaped, links only for the two URLs we know are links."""
    incident = notification.incident
    links = {notification.dashboard_url, incident.runbook_url} - {None}
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{_html_value(value, links)}</td></tr>"
        for name, value in email_rows(notification)
    )
    description = f"<p>{html.escape(incident.description)}</p>" if incident.description else ""
    return (
        "<!DOCTYPE html><html><body>"
        f"<h2>{html.escape(headline(notification))}</h2>"
        f"<p><strong>{html.escape(incident.title)}</strong></p>{description}"
        f"<table cellpadding='4'>{rows}</table>"
        f"<p><small>Sent by RTMH. Idempotency key: "
        f"{html.escape(notification.idempotency_key)}</small></p>"
        "</body></html>\n"
    )


def _html_value(value: str, links: set[str | None]) -> str:
    escaped = html.escape(value)
    return f"<a href='{escaped}'>{escaped}</a>" if value in links else escaped


def _mail_domain(address: str) -> str:
    domain = parseaddr(address)[1].rpartition("@")[2]
    return domain or "rtmh.invalid"


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------


def _as_utc(moment: datetime) -> datetime:
    # Postgres timestamptz arrives aware; a naive value can only have meant UTC here.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _optional_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else _as_utc(moment)


def _parse_time(text: str) -> datetime:
    return _as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _finite(value: Any) -> float | None:
    # JSON has no NaN/Infinity, and a receiver cannot act on them anyway.
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_line(text: str) -> str:
    # Header values must not fold into new headers (header injection through a rule name).
    return " ".join(text.split())
