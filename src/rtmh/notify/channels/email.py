"""Email channel: one multipart (plain text + HTML) message, sent over SMTP with aiosmtplib.

The Message-ID is derived from the idempotency key, so a retry after an ambiguous failure is
the same message and mail systems that deduplicate on Message-ID show it once. SMTP replies are
classified like HTTP statuses: 4xx (and timeouts, refused or dropped connections) are transient
and retried; 5xx, refused authentication, a TLS failure or a missing server feature are
permanent. ``http_status`` stays None; the SMTP code is in ``error`` and the excerpt.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

import aiosmtplib

from rtmh.notify.channels.base import DeliveryResult, excerpt, scrub
from rtmh.notify.channels.common import format_value, headline, one_line, value_summary
from rtmh.notify.channels.config import Channel, EmailSettings
from rtmh.records import Notification, as_utc, rfc3339

#: the whole SMTP conversation (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA) may take at
#: most this many times the per-step timeout
CONVERSATION_TIMEOUTS = 3


def render_email(
    notification: Notification, from_addr: str, to_addrs: tuple[str, ...], sent_at: datetime
) -> EmailMessage:
    """multipart/alternative: plain text first, HTML second (clients show the last they can)."""
    message = EmailMessage()
    message["Subject"] = email_subject(notification)
    message["From"] = from_addr
    message["To"] = ", ".join(to_addrs)
    message["Date"] = format_datetime(as_utc(sent_at))
    message["Message-ID"] = message_id(notification.idempotency_key, from_addr)
    thread = thread_id(notification.incident.id, from_addr)
    message["In-Reply-To"] = thread
    message["References"] = thread
    # RFC 3834: stops vacation auto-replies from answering a monitoring system.
    message["Auto-Submitted"] = "auto-generated"
    message["X-RTMH-Idempotency-Key"] = one_line(notification.idempotency_key)
    message["X-RTMH-Event"] = notification.event
    message.set_content(email_text(notification))
    message.add_alternative(email_html(notification), subtype="html")
    return message


def email_subject(notification: Notification) -> str:
    """'[RTMH][HIGH] open: high_error_rate on checkout'."""
    return one_line(f"[RTMH]{headline(notification)}")


def message_id(idempotency_key: str, from_addr: str) -> str:
    """Message-ID derived from the idempotency key: a retried send is the same message."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:40]
    return f"<rtmh.{digest}@{_mail_domain(from_addr)}>"


def thread_id(incident_id: str, from_addr: str) -> str:
    """A per-incident id that every notification references, so mail clients thread them."""
    return f"<rtmh.incident.{incident_id}@{_mail_domain(from_addr)}>"


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


def conversation_deadline(settings: EmailSettings) -> float:
    """Upper bound, in seconds, on one email delivery attempt."""
    return settings.timeout_seconds * CONVERSATION_TIMEOUTS


async def deliver_email(
    channel: Channel, settings: EmailSettings, notification: Notification, now: datetime
) -> DeliveryResult:
    """Send the message; refused recipients are reported, the rest still counts as sent."""
    message = render_email(notification, settings.from_addr, settings.to_addrs, now)
    secrets = channel.secret_values()
    try:
        async with asyncio.timeout(conversation_deadline(settings)):
            refused, reply = await aiosmtplib.send(
                message,
                sender=parseaddr(settings.from_addr)[1],
                recipients=list(settings.to_addrs),
                hostname=settings.host,
                port=settings.port,
                username=settings.username,
                password=settings.password.reveal() if settings.password else None,
                use_tls=settings.use_tls,
                start_tls=settings.starttls,
                timeout=settings.timeout_seconds,
            )
    except (aiosmtplib.SMTPException, OSError) as exc:
        return _failure(exc, secrets, settings)
    text = reply if not refused else f"{reply}; refused: {_refusals(refused)}"
    return DeliveryResult.success(None, excerpt(text, secrets))


def _failure(
    exc: BaseException, secrets: tuple[str, ...], settings: EmailSettings
) -> DeliveryResult:
    error, retryable = _classify(exc, settings)
    error = scrub(error, secrets)
    return DeliveryResult.failure(error, retryable=retryable, excerpt=excerpt(error, secrets))


def _classify(exc: BaseException, settings: EmailSettings) -> tuple[str, bool]:
    # Order matters: several aiosmtplib errors are also OSError/TimeoutError subclasses.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        return f"SMTP all recipients refused: {text}", any(400 <= c < 500 for c in codes)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        name = type(exc).__name__
        return f"SMTP {exc.code} {exc.message} ({name})", 400 <= exc.code < 500
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return f"timeout: SMTP server did not answer within {settings.timeout_seconds:g}s", True
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {type(exc).__name__}: {exc}", False
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
        return f"connection failed: {type(exc).__name__}: {exc}", True
    # SMTPNotSupported and plain SMTPException: e.g. STARTTLS or AUTH the server does not offer.
    return f"SMTP error: {type(exc).__name__}: {exc}", False


def _refusals(refused: dict[str, aiosmtplib.SMTPResponse]) -> str:
    return ", ".join(
        f"{address} ({reply.code} {reply.message})" for address, reply in refused.items()
    )
