"""Email delivery over SMTP with aiosmtplib: one multipart (plain text + HTML) message.

The Message-ID is derived from the idempotency key, so a retry after an ambiguous failure is
the same message and mail systems that deduplicate on Message-ID show it once. SMTP replies are
classified like HTTP statuses: 4xx (and timeouts, refused or dropped connections) are transient
and retried; 5xx, refused authentication, a TLS failure or a missing server feature are
permanent. ``http_status`` stays None; the SMTP code is in ``error`` and the excerpt.
"""

from __future__ import annotations

import asyncio
import ssl
from datetime import datetime
from email.utils import parseaddr

import aiosmtplib

from rtmh.notify.channels.base import DeliveryResult, excerpt, scrub
from rtmh.notify.channels.config import Channel, EmailSettings
from rtmh.notify.render import Notification, render_email

#: the whole SMTP conversation (connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA) may take at
#: most this many times the per-step timeout
CONVERSATION_TIMEOUTS = 3


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
