"""Delivery through every channel type to real local receivers (tests/receivers.py).

Real sockets on 127.0.0.1, no database, no Kafka: what each receiver gets (headers, body,
signature, SMTP message) and how each failure is classified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest

from rtmh.notify.channels import Channel, DeliveryResult, deliver, parse_channel, verify_signature
from rtmh.notify.channels.alertmanager import label_fingerprint
from rtmh.records import IncidentSnapshot, Notification
from tests.receivers import HttpReceiver, SmtpReceiver

T = TypeVar("T")
NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)
INCIDENT_ID = "5f0c9a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
HMAC_SECRET = "whsec-4f1b2c3d-integration"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefABCDEF"
SMTP_PASSWORD = "smtp-pa55-integration"


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def notification(event: str = "open", **incident_overrides: Any) -> Notification:
    fields: dict[str, Any] = {
        "id": INCIDENT_ID,
        "title": "Error rate above 5% on checkout",
        "severity": "high",
        "status": "resolved" if event == "resolve" else "open",
        "source": "error_rate_monitor",
        "window_key": "checkout",
        "rule_name": "high_error_rate",
        "first_seen": NOW - timedelta(minutes=2),
        "last_seen": NOW,
        "last_value": 0.1234,
        "threshold": 0.05,
        "condition": ">",
        "peak_value": 0.31,
        "resolved_at": NOW if event == "resolve" else None,
        "runbook_url": "https://runbooks.example.com/checkout-errors",
        "metric_type": "error_rate",
    }
    fields.update(incident_overrides)
    return Notification(
        id=42,
        idempotency_key=f"{INCIDENT_ID}:chan:{event}",
        event=event,  # type: ignore[arg-type]
        attempt=1,
        incident=IncidentSnapshot(**fields),
        dashboard_url=f"https://rtmh.example.com/incidents/{INCIDENT_ID}",
    )


async def _send(channel: Channel, n: Notification) -> DeliveryResult:
    async with httpx.AsyncClient() as client:
        return await deliver(channel, n, client, now=NOW)


def send(channel: Channel, n: Notification | None = None) -> DeliveryResult:
    return run(_send(channel, n or notification()))


def webhook(url: str, **config: Any) -> Channel:
    return parse_channel(
        "ops-hook", "webhook", {"url": url, **config}, {"hmac_secret": HMAC_SECRET}
    )


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver(secret=HMAC_SECRET) as receiver:
        yield receiver


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver(auth=("rtmh", SMTP_PASSWORD)) as receiver:
        yield receiver


def free_port() -> int:
    """A port with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ------------------------------------------------------------------------------------------------
# Generic webhook
# ------------------------------------------------------------------------------------------------


def test_webhook_is_signed_and_the_receiver_verifies_it(hook: HttpReceiver) -> None:
    result = send(webhook(hook.url))
    assert result == DeliveryResult(True, 200, "ok", None, False)
    [request] = hook.wait_for(1)
    assert request.method == "POST" and request.path == "/hook"
    assert request.signature_valid is True
    assert verify_signature(HMAC_SECRET, request.body, request.header("X-RTMH-Signature"))
    assert request.header("Content-Type") == "application/json"
    assert request.header("X-RTMH-Idempotency-Key") == f"{INCIDENT_ID}:chan:open"
    assert request.header("X-RTMH-Event") == "open"
    assert request.header("X-RTMH-Timestamp") == str(int(NOW.timestamp()))
    body = request.json()
    assert body["event"] == "open" and body["version"] == "1"
    assert body["sent_at"] == "2024-05-01T12:00:30.000Z"
    assert body["incident"]["id"] == INCIDENT_ID
    assert body["incident"]["service"] == "checkout"


def test_unsigned_webhook_without_secret_and_custom_headers(hook: HttpReceiver) -> None:
    channel = parse_channel(
        "plain",
        "webhook",
        {"url": hook.url, "headers": {"X-Team": "sre"}},
        {"headers": {"Authorization": "Bearer tok-123"}},
    )
    assert send(channel).ok
    [request] = hook.wait_for(1)
    assert request.header("X-RTMH-Signature") is None
    assert request.signature_valid is False  # the receiver expected one
    assert request.header("X-Team") == "sre"
    assert request.header("Authorization") == "Bearer tok-123"


def test_retries_carry_the_same_idempotency_key(hook: HttpReceiver) -> None:
    hook.fail_next(1, status=503)
    channel = webhook(hook.url)
    first, second = send(channel), send(channel)
    assert (first.ok, first.retryable, second.ok) == (False, True, True)
    keys = {request.header("X-RTMH-Idempotency-Key") for request in hook.wait_for(2)}
    assert keys == {f"{INCIDENT_ID}:chan:open"}


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (503, True), (504, True), (429, True), (408, True),
     (400, False), (401, False), (403, False), (404, False), (410, False), (422, False)],
)  # fmt: skip
def test_failure_statuses_are_classified(hook: HttpReceiver, status: int, retryable: bool) -> None:
    hook.fail_next(1, status=status, body=f"receiver says {status}")
    result = send(webhook(hook.url))
    assert not result.ok
    assert result.http_status == status
    assert result.retryable is retryable
    assert result.error is not None and result.error.startswith(f"HTTP {status}")
    assert result.response_excerpt == f"receiver says {status}"


def test_retry_after_is_reported(hook: HttpReceiver) -> None:
    hook.fail_next(1, status=429, headers={"Retry-After": "17"})
    result = send(webhook(hook.url))
    assert (result.retryable, result.retry_after_seconds) == (True, 17.0)


def test_redirects_are_not_followed(hook: HttpReceiver) -> None:
    hook.fail_next(1, status=307, headers={"Location": "http://127.0.0.1:1/elsewhere"})
    result = send(webhook(hook.url))
    assert (result.ok, result.retryable, result.http_status) == (False, False, 307)
    assert len(hook.requests) == 1


def test_long_response_is_cut_to_500_characters(hook: HttpReceiver) -> None:
    hook.fail_next(1, status=500, body="e" * 5000)
    assert len(send(webhook(hook.url)).response_excerpt) == 500


def test_timeout_is_retryable_with_error_text(hook: HttpReceiver) -> None:
    hook.hang_next(1, seconds=10)
    result = send(webhook(hook.url, timeout_seconds=0.3))
    assert not result.ok and result.retryable
    assert result.http_status is None
    assert result.error == "timeout: no response within 0.3s"
    assert len(hook.wait_for(1)) == 1  # it did arrive; the answer did not


def test_connection_refused_is_retryable() -> None:
    result = send(webhook(f"http://127.0.0.1:{free_port()}/hook", timeout_seconds=2))
    assert not result.ok and result.retryable and result.http_status is None
    assert result.error is not None and result.error.startswith("connection failed:")


def test_receiver_echoing_a_secret_gets_it_scrubbed(hook: HttpReceiver) -> None:
    channel = parse_channel(
        "echo", "webhook", {"url": hook.url}, {"headers": {"Authorization": "Bearer tok-echo"}}
    )
    hook.fail_next(1, status=401, body="bad credentials: Bearer tok-echo")
    result = send(channel)
    assert result.response_excerpt == "bad credentials: ***"
    assert "tok-echo" not in repr(result)


# ------------------------------------------------------------------------------------------------
# Alertmanager format
# ------------------------------------------------------------------------------------------------


def test_alertmanager_payload_reaches_the_receiver(hook: HttpReceiver) -> None:
    channel = parse_channel("am-receiver", "alertmanager", {"url": hook.url}, {})
    assert send(channel).ok
    assert send(channel, notification("resolve")).ok
    firing, resolved = (request.json() for request in hook.wait_for(2))
    for body in (firing, resolved):
        assert body["version"] == "4"
        assert body["receiver"] == "am-receiver"
        assert set(body) >= {"groupKey", "status", "groupLabels", "commonLabels", "alerts"}
        [alert] = body["alerts"]
        assert set(alert) == {
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        }
        assert alert["labels"]["alertname"] == "high_error_rate"
        assert alert["labels"]["service"] == "checkout"
        assert alert["labels"]["severity"] == "high"
        assert alert["annotations"]["runbook_url"].startswith("https://runbooks.")
        assert alert["fingerprint"] == label_fingerprint(alert["labels"])
    assert (firing["status"], resolved["status"]) == ("firing", "resolved")
    assert firing["alerts"][0]["endsAt"] == "0001-01-01T00:00:00Z"
    assert resolved["alerts"][0]["endsAt"] == "2024-05-01T12:00:30.000Z"


def test_webhook_with_alertmanager_format_flag(hook: HttpReceiver) -> None:
    assert send(webhook(hook.url, alertmanager_format=True)).ok
    [request] = hook.wait_for(1)
    assert request.json()["version"] == "4"
    assert request.signature_valid is True


# ------------------------------------------------------------------------------------------------
# Slack
# ------------------------------------------------------------------------------------------------


def test_slack_payload_shape() -> None:
    with HttpReceiver() as slack:
        channel = parse_channel("chat", "slack", {}, {"url": slack.url_for("/services/T0/B0/x")})
        result = send(channel)
        assert result.ok and result.response_excerpt == "ok"
        [request] = slack.wait_for(1)
    assert request.path == "/services/T0/B0/x"
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    message = request.json()
    assert "high_error_rate" in message["text"]
    block_types = [block["type"] for block in message["blocks"]]
    assert block_types[0] == "header" and "actions" in block_types
    fields = " ".join(
        field["text"] for block in message["blocks"] for field in block.get("fields", [])
    )
    for fact in ("*Severity*\nHIGH", "*Service*\ncheckout", "*Rule*\nhigh_error_rate",
                 "*Value vs threshold*\n0.1234 &gt; 0.05", "*Status*\nopen"):  # fmt: skip
        assert fact in fields


def test_slack_permanent_error_is_dead_at_once() -> None:
    with HttpReceiver() as slack:
        slack.fail_next(1, status=404, body="no_service")
        url = slack.url_for("/services/T0/B0/secret-token-path")
        result = send(parse_channel("chat", "slack", {}, {"url": url}))
    assert (result.ok, result.retryable, result.response_excerpt) == (False, False, "no_service")


# ------------------------------------------------------------------------------------------------
# PagerDuty (a local receiver stands in as base_url)
# ------------------------------------------------------------------------------------------------


def pagerduty(base_url: str) -> Channel:
    return parse_channel("pd", "pagerduty", {"base_url": base_url}, {"routing_key": ROUTING_KEY})


def test_pagerduty_trigger_then_resolve_share_the_dedup_key() -> None:
    with HttpReceiver() as pd:
        pd.respond_with(202, '{"status":"success","message":"Event processed"}')
        channel = pagerduty(pd.base_url)
        trigger, resolve = send(channel), send(channel, notification("resolve"))
        requests = pd.wait_for(2)
    assert trigger.ok and trigger.http_status == 202 and resolve.ok
    assert [request.path for request in requests] == ["/v2/enqueue", "/v2/enqueue"]
    first, second = (request.json() for request in requests)
    assert (first["event_action"], second["event_action"]) == ("trigger", "resolve")
    assert first["dedup_key"] == second["dedup_key"] == INCIDENT_ID
    assert first["routing_key"] == ROUTING_KEY
    payload = first["payload"]
    assert (payload["source"], payload["severity"]) == ("checkout", "error")
    assert payload["component"] == "error_rate"
    assert first["links"][0]["href"].endswith(INCIDENT_ID)


def test_pagerduty_rejection_is_permanent_and_keeps_the_key_out() -> None:
    with HttpReceiver() as pd:
        # A receiver quoting the key back must not put it into the result (or the database).
        pd.fail_next(1, status=400, body=f'{{"status":"invalid event","key":"{ROUTING_KEY}"}}')
        result = send(pagerduty(pd.base_url))
    assert (result.ok, result.retryable) == (False, False)
    assert ROUTING_KEY not in repr(result)


def test_pagerduty_test_notification_uses_the_change_endpoint() -> None:
    with HttpReceiver() as pd:
        pd.respond_with(202, "{}")
        assert send(pagerduty(pd.base_url), Notification.test("test-1", now=NOW)).ok
        [request] = pd.wait_for(1)
    assert request.path == "/v2/change/enqueue"


# ------------------------------------------------------------------------------------------------
# Email
# ------------------------------------------------------------------------------------------------


def email(smtp: SmtpReceiver, **config: Any) -> Channel:
    settings = {
        "host": smtp.host,
        "port": smtp.port,
        "username": "rtmh",
        "from_addr": "RTMH <rtmh@example.com>",
        "to_addrs": ["oncall@example.com", "sre@example.com"],
        "timeout_seconds": 2,
        **config,
    }
    return parse_channel("mail", "email", settings, {"password": SMTP_PASSWORD})


def test_email_arrives_with_subject_and_both_parts(smtp: SmtpReceiver) -> None:
    result = send(email(smtp))
    assert result.ok and result.http_status is None
    [mail] = smtp.wait_for(1)
    assert mail.login == "rtmh"
    assert mail.mail_from == "rtmh@example.com"
    assert mail.rcpt_tos == ("oncall@example.com", "sre@example.com")
    assert mail.subject == "[RTMH][HIGH] open: high_error_rate on checkout"
    message = mail.message
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = mail.part("plain"), mail.part("html")
    assert plain is not None and "Value vs threshold: 0.1234 > 0.05" in plain
    assert rich is not None and "<table" in rich and "high_error_rate" in rich
    assert message["Message-ID"].startswith("<rtmh.")
    assert message["X-RTMH-Idempotency-Key"] == f"{INCIDENT_ID}:chan:open"


def test_email_transient_refusal_is_retryable(smtp: SmtpReceiver) -> None:
    smtp.fail_next(1, code=451, message="greylisted, try later")
    result = send(email(smtp))
    assert (result.ok, result.retryable) == (False, True)
    assert result.error is not None and "451" in result.error and "greylisted" in result.error


def test_email_permanent_refusal_is_not_retryable(smtp: SmtpReceiver) -> None:
    smtp.fail_next(1, code=554, message="rejected as spam")
    result = send(email(smtp))
    assert (result.ok, result.retryable) == (False, False)


def test_email_partly_refused_recipients_still_count_as_sent(smtp: SmtpReceiver) -> None:
    smtp.refuse_recipient("sre@example.com")
    result = send(email(smtp))
    assert result.ok
    assert "sre@example.com" in result.response_excerpt
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ("oncall@example.com",)


def test_email_wrong_password_is_permanent_and_secret_free(smtp: SmtpReceiver) -> None:
    channel = parse_channel(
        "mail",
        "email",
        {"host": smtp.host, "port": smtp.port, "username": "rtmh",
         "from_addr": "rtmh@example.com", "to_addrs": ["a@example.com"]},
        {"password": "wrong-password-xyz"},
    )  # fmt: skip
    result = send(channel)
    assert (result.ok, result.retryable) == (False, False)
    assert result.error is not None and "535" in result.error
    assert "wrong-password-xyz" not in repr(result)


def test_email_starttls_required_but_not_offered_is_permanent(smtp: SmtpReceiver) -> None:
    result = send(email(smtp, starttls=True))
    assert (result.ok, result.retryable) == (False, False)
    assert result.error is not None and "STARTTLS" in result.error


def test_email_connection_refused_is_retryable() -> None:
    channel = parse_channel(
        "mail",
        "email",
        {"host": "127.0.0.1", "port": free_port(), "from_addr": "rtmh@example.com",
         "to_addrs": ["a@example.com"], "timeout_seconds": 2},
        {},
    )  # fmt: skip
    result = send(channel)
    assert (result.ok, result.retryable) == (False, True)


# ------------------------------------------------------------------------------------------------
# Secrets stay out of logs
# ------------------------------------------------------------------------------------------------


def test_logs_hold_no_secret(
    hook: HttpReceiver, smtp: SmtpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hook.fail_next(3, status=500, body=f"{HMAC_SECRET} {ROUTING_KEY}")
    with HttpReceiver() as pd:
        pd.fail_next(1, status=500, body=ROUTING_KEY)
        for channel in (webhook(hook.url), pagerduty(pd.base_url), email(smtp)):
            send(channel)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "failed (will retry)" in logged
    for secret in (HMAC_SECRET, ROUTING_KEY, SMTP_PASSWORD):
        assert secret not in logged
    assert json.dumps([str(record.args) for record in caplog.records]).count(ROUTING_KEY) == 0
