"""The outcome of one delivery attempt, and the HTTP exchange the HTTP channels share.

Retry policy, decided here once for every channel:

* 2xx: delivered.
* 408, 429, 5xx, timeouts, refused/reset connections, protocol errors from the receiver:
  ``retryable=True`` (the receiver or the network may recover; the notifier backs off).
* every other 4xx: ``retryable=False``. The receiver has understood and refused the request
  (bad payload, wrong token, unknown routing key, archived Slack channel); sending the same
  bytes again cannot succeed, so the notification is dead at once instead of burning retries.
* 3xx: ``retryable=False``. Redirects are not followed: re-posting a signed payload to wherever
  a Location header points would hand it to a host nobody configured.
* request errors raised before anything is sent (bad URL scheme, invalid header):
  ``retryable=False``, it is a configuration problem.
* a connection the target policy refuses (:class:`~rtmh.notify.targets.TargetRefused`: the
  host is, or resolves to, a loopback, private, link-local or metadata address the allow-list
  does not admit): ``retryable=False``. Retrying would only ask DNS again until it answers
  something else, which is what a rebinding attack waits for.

Nothing a receiver does makes these functions raise; every secret of the channel is scrubbed
from what they return.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from rtmh import __version__
from rtmh.notify.targets import TargetRefused

USER_AGENT: Final = f"rtmh/{__version__}"
EXCERPT_CHARS: Final = 500
# Enough for any error a receiver writes; a receiver that streams megabytes is not read further.
_BODY_READ_BYTES: Final = 8192
# After the status line the outcome is known; the body only feeds the excerpt, so it gets a
# short budget of its own and never turns a delivered notification into a timeout.
BODY_READ_SECONDS: Final = 2.0

# httpx logs every request's full URL at INFO (httpcore at DEBUG), and a Slack incoming-webhook
# URL is a credential: those loggers are raised to WARNING unless the application set a level.
for _name in ("httpx", "httpcore"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What one attempt did. ``error`` is None exactly when ``ok``."""

    ok: bool
    http_status: int | None
    #: the start of the receiver's answer (HTTP body or SMTP reply), secrets scrubbed
    response_excerpt: str
    error: str | None
    #: whether trying again later may succeed (ignored when ok)
    retryable: bool
    #: the receiver's Retry-After, in seconds, when it sent one (429/503)
    retry_after_seconds: float | None = None

    @classmethod
    def success(cls, http_status: int | None, excerpt: str) -> DeliveryResult:
        return cls(True, http_status, excerpt, None, False)

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        retryable: bool,
        http_status: int | None = None,
        excerpt: str = "",
        retry_after_seconds: float | None = None,
    ) -> DeliveryResult:
        return cls(False, http_status, excerpt, error, retryable, retry_after_seconds)


def is_retryable_status(status: int) -> bool:
    """408 and 429 are 'try later' by definition; 5xx is the receiver's own failure."""
    return status in (408, 429) or status >= 500


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in ``text`` by ``***`` (longest first)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def excerpt(text: str, secrets: Iterable[str]) -> str:
    """Scrubbed, then cut to EXCERPT_CHARS (scrubbing first, so a cut cannot half-hide one)."""
    return scrub(text, secrets)[:EXCERPT_CHARS]


@dataclass(frozen=True, slots=True)
class HttpPost:
    """One POST of already-encoded bytes."""

    url: str
    body: bytes
    headers: Mapping[str, str]
    timeout_seconds: float


async def post(
    client: httpx.AsyncClient, request: HttpPost, secrets: Iterable[str]
) -> DeliveryResult:
    """Send ``request`` and classify the outcome (see the module docstring)."""
    hidden = tuple(secrets)
    try:
        status, reason, headers, body = await _exchange(client, request)
    except TargetRefused as exc:
        return DeliveryResult.failure(scrub(f"refused: {exc}", hidden), retryable=False)
    except (httpx.TimeoutException, TimeoutError):
        return DeliveryResult.failure(
            f"timeout: no response within {request.timeout_seconds:g}s", retryable=True
        )
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        error = f"request not sendable: {type(exc).__name__}: {exc}"
        return DeliveryResult.failure(scrub(error, hidden), retryable=False)
    except (httpx.TransportError, OSError) as exc:
        error = f"connection failed: {type(exc).__name__}: {exc}"
        return DeliveryResult.failure(scrub(error, hidden), retryable=True)
    return _classify(status, reason, headers, excerpt(body, hidden))


async def _exchange(
    client: httpx.AsyncClient, request: HttpPost
) -> tuple[int, str, httpx.Headers, str]:
    built = client.build_request(
        "POST",
        request.url,
        content=request.body,
        headers=dict(request.headers),
        timeout=request.timeout_seconds,
    )
    # httpx's timeout is per phase (connect, write, each read); this bounds the whole wait.
    async with asyncio.timeout(request.timeout_seconds):
        response = await client.send(built, stream=True, follow_redirects=False)
    try:
        body = await _read_some(response)
    finally:
        await response.aclose()
    return response.status_code, response.reason_phrase, response.headers, body


async def _read_some(response: httpx.Response) -> str:
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_READ_SECONDS):
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= _BODY_READ_BYTES:
                    break
    except (httpx.HTTPError, TimeoutError):
        pass  # the status already decided the outcome; only the excerpt is lost
    return b"".join(chunks)[:_BODY_READ_BYTES].decode("utf-8", errors="replace")


def _classify(status: int, reason: str, headers: httpx.Headers, body: str) -> DeliveryResult:
    if 200 <= status < 300:
        return DeliveryResult.success(status, body)
    if 300 <= status < 400:
        error = f"HTTP {status} {reason}: redirects are not followed; configure the final URL"
        return DeliveryResult.failure(error, retryable=False, http_status=status, excerpt=body)
    return DeliveryResult.failure(
        f"HTTP {status} {reason}".rstrip(),
        retryable=is_retryable_status(status),
        http_status=status,
        excerpt=body,
        retry_after_seconds=parse_retry_after(headers.get("retry-after")),
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None when absent/bad."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())
