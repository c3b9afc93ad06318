"""Standard Webhooks signing (spec 1.0.0): the secret format, the signature, its verification,
and what a receiver on loopback gets (a real socket, no database)."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rtmh.notify.channels import (
    ChannelConfigError,
    WebhookSettings,
    deliver,
    parse_channel,
    sign_standard,
    verify_signature,
    verify_standard_signature,
)
from rtmh.notify.channels.webhook import build_request, standard_webhook_id
from rtmh.notify.targets import TargetPolicy, guarded_client
from rtmh.records import IncidentSnapshot, Notification
from tests.receivers import ALLOW_LOOPBACK, HttpReceiver

# The spec's own example signature comes without its secret; this vector (secret, id,
# timestamp, body -> signature) is the one the reference libraries of
# github.com/standard-webhooks/standard-webhooks test their signing against.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)


def vector_headers(signature: str = VECTOR_SIGNATURE, **changes: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": signature,
    }
    headers.update({name.replace("_", "-"): value for name, value in changes.items()})
    return headers


def notification(key: str = "rtmh:5f0c:ops.hooks:open:1") -> Notification:
    incident = IncidentSnapshot(
        id="5f0c9a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        title="Error rate above 5% on checkout",
        severity="high",
        status="open",
        source="error_rate_monitor",
        window_key="checkout",
        rule_name="high_error_rate",
        first_seen=NOW - timedelta(minutes=2),
        last_seen=NOW,
        last_value=0.12,
        threshold=0.05,
        condition=">",
    )
    return Notification(7, key, "open", 1, incident, "https://rtmh.example.com/incidents/x")


# --- the signature ------------------------------------------------------------------------------


def test_signing_reproduces_the_reference_vector() -> None:
    assert sign_standard(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY) == (
        VECTOR_SIGNATURE
    )
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    assert sign_standard(key, VECTOR_ID, str(VECTOR_TIMESTAMP), VECTOR_BODY) == VECTOR_SIGNATURE


def test_verification_accepts_the_vector_within_the_tolerance_only() -> None:
    headers = vector_headers()
    for skew in (0, 299, -299, 300, -300):
        assert verify_standard_signature(
            VECTOR_SECRET, headers, VECTOR_BODY, VECTOR_TIMESTAMP + skew
        )
    for skew in (301, -301, 86_400):
        assert not verify_standard_signature(
            VECTOR_SECRET, headers, VECTOR_BODY, VECTOR_TIMESTAMP + skew
        )
    moment = datetime.fromtimestamp(VECTOR_TIMESTAMP + 10, UTC)
    assert verify_standard_signature(VECTOR_SECRET, headers, VECTOR_BODY, moment)
    assert not verify_standard_signature(
        VECTOR_SECRET, headers, VECTOR_BODY, VECTOR_TIMESTAMP + 50, tolerance=30
    )


def test_verification_rejects_anything_changed() -> None:
    now = VECTOR_TIMESTAMP
    other_secret = "whsec_" + base64.b64encode(b"x" * 24).decode()
    assert not verify_standard_signature(other_secret, vector_headers(), VECTOR_BODY, now)
    assert not verify_standard_signature(VECTOR_SECRET, vector_headers(), VECTOR_BODY + b" ", now)
    assert not verify_standard_signature(
        VECTOR_SECRET, vector_headers(webhook_id="msg_other"), VECTOR_BODY, now
    )
    # a timestamp moved into the tolerance does not carry the old signature with it
    moved = vector_headers(webhook_timestamp=str(now + 1))
    assert not verify_standard_signature(VECTOR_SECRET, moved, VECTOR_BODY, now)
    for bad in ("", "v1,", "v2," + VECTOR_SIGNATURE[3:], VECTOR_SIGNATURE[3:], "v1,AAAA"):
        assert not verify_standard_signature(VECTOR_SECRET, vector_headers(bad), VECTOR_BODY, now)
    for missing in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        headers = {k: v for k, v in vector_headers().items() if k != missing}
        assert not verify_standard_signature(VECTOR_SECRET, headers, VECTOR_BODY, now)
    for stamp in ("-5", "1614265330.0", "١٦١٤٢٦٥٣٣٠"):  # the last: Arabic-Indic digits
        headers = vector_headers(webhook_timestamp=stamp)
        assert not verify_standard_signature(VECTOR_SECRET, headers, VECTOR_BODY, now)
    assert not verify_standard_signature("not-a-whsec", vector_headers(), VECTOR_BODY, now)


def test_verification_takes_any_of_several_signatures_and_any_header_case() -> None:
    several = (
        f"v1a,bm90IGNoZWNrZWQ= v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {VECTOR_SIGNATURE}"
    )
    headers = {name.title(): value for name, value in vector_headers(several).items()}
    assert verify_standard_signature(VECTOR_SECRET, headers, VECTOR_BODY, VECTOR_TIMESTAMP)


def test_webhook_id_is_the_idempotency_key_without_dots() -> None:
    assert standard_webhook_id("rtmh:5f0c:ops-hook:open:3") == "rtmh:5f0c:ops-hook:open:3"
    assert standard_webhook_id("rtmh:5f0c:ops.hooks:open:1") == "rtmh:5f0c:ops%2Ehooks:open:1"
    assert standard_webhook_id("a%2E.b") == "a%252E%2Eb"  # still reversible


# --- the secret ---------------------------------------------------------------------------------


def whsec(length: int) -> str:
    return "whsec_" + base64.b64encode(b"k" * length).decode()


@pytest.mark.parametrize(
    "secret",
    [
        whsec(23),
        whsec(65),
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
        "whsec_",
        "whsec_not base64 at all!!",
        "whsec_" + base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # base64url, not base64
        "whsk_" + base64.b64encode(b"k" * 32).decode(),  # an asymmetric (ed25519) key
    ],
)
def test_a_secret_that_is_not_whsec_base64_of_24_to_64_bytes_is_refused(secret: str) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        parse_channel(
            "hook", "webhook", {"url": "https://h.example"}, {"standard_webhooks_secret": secret}
        )
    assert caught.value.field == "secrets.standard_webhooks_secret"
    assert "must be whsec_ followed by the base64 of 24 to 64 random bytes" in str(caught.value)
    assert secret.removeprefix("whsec_") not in str(caught.value) or secret == "whsec_"


def test_good_secrets_are_accepted_with_or_without_padding_and_kept_secret() -> None:
    for secret in (whsec(24), whsec(64), VECTOR_SECRET, whsec(25).rstrip("=")):
        channel = parse_channel(
            "hook", "webhook", {"url": "https://h.example"}, {"standard_webhooks_secret": secret}
        )
        assert secret in channel.secret_values()
        assert secret not in repr(channel)


def test_config_headers_cannot_impersonate_the_standard_headers() -> None:
    with pytest.raises(ChannelConfigError, match=r"config\.headers\.Webhook-Signature: is set by"):
        parse_channel(
            "hook",
            "webhook",
            {"url": "https://h.example", "headers": {"Webhook-Signature": "v1,forged"}},
            {},
        )


# --- on the wire ------------------------------------------------------------------------------


def send_twice(channel_secrets: dict[str, Any], hook: HttpReceiver) -> list[Any]:
    channel = parse_channel("ops.hooks", "webhook", {"url": hook.url}, channel_secrets)
    first, second = NOW, NOW + timedelta(seconds=42)

    async def main() -> None:
        async with guarded_client(TargetPolicy.parse([ALLOW_LOOPBACK])) as client:
            for moment in (first, second):
                assert (await deliver(channel, notification(), client, now=moment)).ok

    asyncio.run(main())
    return hook.wait_for(2)


def test_a_receiver_verifies_both_signatures_and_retries_keep_the_id() -> None:
    hmac_secret = "legacy-hmac-secret"
    with HttpReceiver(secret=hmac_secret) as hook:
        first, second = send_twice(
            {"hmac_secret": hmac_secret, "standard_webhooks_secret": SECRET}, hook
        )
    for request, moment in ((first, NOW), (second, NOW + timedelta(seconds=42))):
        assert verify_standard_signature(SECRET, request.headers, request.body, moment)
        assert request.header("webhook-timestamp") == str(int(moment.timestamp()))
        assert request.signature_valid  # X-RTMH-Signature, checked by the receiver itself
        assert verify_signature(hmac_secret, request.body, request.header("X-RTMH-Signature"))
    assert {r.header("webhook-id") for r in (first, second)} == {"rtmh:5f0c:ops%2Ehooks:open:1"}
    assert first.header("X-RTMH-Idempotency-Key") == "rtmh:5f0c:ops.hooks:open:1"
    # the first request replayed later than the tolerance is refused
    late = NOW + timedelta(seconds=301)
    assert not verify_standard_signature(SECRET, first.headers, first.body, late)


def test_standard_signature_alone_and_no_signature_at_all() -> None:
    with HttpReceiver() as hook:
        standard_only, _ = send_twice({"standard_webhooks_secret": SECRET}, hook)
    assert standard_only.header("X-RTMH-Signature") is None
    assert verify_standard_signature(SECRET, standard_only.headers, standard_only.body, NOW)
    plain = parse_channel("plain", "webhook", {"url": "https://h.example/x"}, {})
    assert isinstance(plain.settings, WebhookSettings)
    sent = build_request(plain, plain.settings, notification(), NOW).headers
    assert not {k.lower() for k in sent} & {"webhook-id", "webhook-timestamp", "webhook-signature"}
