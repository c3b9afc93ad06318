"""Unit tests of what the channels send: rendered payloads, channel config, signing, redaction.

Everything here is pure (no sockets); tests/unit/test_channels_delivery.py sends the same
payloads to real local receivers.
"""

from __future__ import annotations

import json
import math
import pickle
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.notify.channels import (
    Channel,
    ChannelConfigError,
    EmailSettings,
    PagerDutySettings,
    Secret,
    SlackSettings,
    WebhookSettings,
    is_retryable_status,
    max_attempt_seconds,
    parse_channel,
    parse_retry_after,
    redact,
    sign,
    verify_signature,
)
from rtmh.notify.channels.alertmanager import label_fingerprint, render_alertmanager
from rtmh.notify.channels.base import excerpt, scrub
from rtmh.notify.channels.common import encode_json, headline, value_summary
from rtmh.notify.channels.email import email_subject, message_id, render_email
from rtmh.notify.channels.pagerduty import render_pagerduty
from rtmh.notify.channels.slack import render_slack
from rtmh.notify.channels.webhook import render_webhook
from rtmh.records import IncidentSnapshot, Notification, value_vs_threshold

NOW = datetime(2024, 5, 1, 12, 0, 30, tzinfo=UTC)
INCIDENT_ID = "5f0c9a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def incident(**overrides: Any) -> IncidentSnapshot:
    fields: dict[str, Any] = {
        "id": INCIDENT_ID,
        "title": "Error rate above 5% on checkout",
        "severity": "high",
        "status": "open",
        "source": "error_rate_monitor",
        "window_key": "checkout",
        "rule_name": "high_error_rate",
        "first_seen": NOW - timedelta(minutes=2),
        "last_seen": NOW,
        "last_value": 0.1234,
        "threshold": 0.05,
        "condition": ">",
        "peak_value": 0.31,
        "description": "More than 5% of checkout requests fail.",
        "runbook_url": "https://runbooks.example.com/checkout-errors",
        "metric_type": "error_rate",
        "metadata": {"region": "eu-west-1"},
    }
    fields.update(overrides)
    return IncidentSnapshot(**fields)


def notification(event: str = "open", **overrides: Any) -> Notification:
    return Notification(
        id=42,
        idempotency_key=f"{INCIDENT_ID}:ops-webhook:{event}:1",
        event=event,  # type: ignore[arg-type]
        attempt=overrides.pop("attempt", 1),
        incident=incident(**overrides),
        dashboard_url="https://rtmh.example.com/incidents/" + INCIDENT_ID,
    )


# ------------------------------------------------------------------------------------------------
# Notification / IncidentSnapshot
# ------------------------------------------------------------------------------------------------


def test_headline_and_subject_follow_the_documented_shape() -> None:
    assert headline(notification()) == "[HIGH] open: high_error_rate on checkout"
    assert email_subject(notification()) == "[RTMH][HIGH] open: high_error_rate on checkout"


def test_subject_cannot_carry_header_injection_through_a_rule_name() -> None:
    subject = email_subject(notification(rule_name="evil\r\nBcc: victim@example.com"))
    assert "\n" not in subject and "\r" not in subject


def test_global_window_key_and_missing_rule_read_well() -> None:
    n = notification(window_key="__all__", rule_name=None)
    assert headline(n) == "[HIGH] open: Error rate above 5% on checkout on all services"


def test_value_summary_variants() -> None:
    assert value_summary(incident()) == "0.1234 > 0.05"
    assert value_summary(incident(condition=None)) == "0.1234 (threshold 0.05)"
    assert value_summary(incident(threshold=None, last_value=None)) == "n/a"
    assert value_summary(incident(last_value=float("nan"))) == "n/a > 0.05"


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_a_recovered_value_does_not_read_as_if_the_condition_held(status: str) -> None:
    resolved = incident(status=status, last_value=0.012)
    assert value_summary(resolved) == "recovered: 0.012, threshold > 0.05"
    assert value_summary(incident(status=status, condition=None)) == (
        "recovered: 0.1234, threshold 0.05"
    )
    assert value_summary(incident(status=status, threshold=None)) == "recovered: 0.1234"
    n = notification("resolve", status=status, last_value=0.012, resolved_at=NOW)
    assert "(recovered: 0.012, threshold &gt; 0.05)" in render_slack(n)["text"]
    plain = render_email(n, "rtmh@example.com", ("ops@example.com",), NOW)
    assert isinstance(plain, EmailMessage)
    body = plain.get_body(("plain",))
    assert body is not None
    assert "Value vs threshold: recovered: 0.012, threshold > 0.05" in body.get_content()
    annotations = render_alertmanager(n, "ops")["alerts"][0]["annotations"]
    assert annotations["value"] == "0.012"


def test_value_vs_threshold_wording() -> None:
    assert value_vs_threshold("94.6", ">", "500", live=False) == "recovered: 94.6, threshold > 500"
    assert value_vs_threshold("612", ">", "500", live=True) == "612 > 500"


def test_notification_rejects_bad_event_attempt_and_key() -> None:
    with pytest.raises(ValueError, match="event"):
        notification(event="fire")
    with pytest.raises(ValueError, match="attempt"):
        notification(attempt=0)
    with pytest.raises(ValueError, match="idempotency_key"):
        Notification(1, "", "open", 1, incident())
    with pytest.raises(ValueError, match="severity"):
        incident(severity="urgent")


def test_snapshot_from_rows_prefers_rule_row_then_metadata() -> None:
    row = {
        "id": INCIDENT_ID,
        "title": "t",
        "severity": "critical",
        "status": "open",
        "source": "s",
        "window_key": "api",
        "first_seen": datetime(2024, 5, 1, 12, 0),  # naive: taken as UTC
        "last_seen": NOW,
        "last_value": 3.0,
        "threshold": None,
        "peak_value": float("inf"),
        "resolved_at": None,
        "description": None,
        "metadata": {"rule_name": "from_metadata", "runbook_url": "https://rb/m"},
    }
    rule = {"name": "p99_latency", "condition": ">=", "threshold": 2.5, "metric_type": "latency"}
    with_rule = IncidentSnapshot.from_rows(row, rule)
    assert with_rule.rule_name == "p99_latency"
    assert with_rule.condition == ">="
    assert with_rule.threshold == 2.5
    assert with_rule.runbook_url == "https://rb/m"  # the rule row had none
    assert with_rule.peak_value is None  # infinity cannot go into JSON
    assert with_rule.first_seen.tzinfo is UTC
    assert IncidentSnapshot.from_rows(row).rule_name == "from_metadata"


_texts = st.text(max_size=30)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
_values = st.none() | st.floats(allow_nan=False, allow_infinity=False)


@given(
    title=_texts,
    severity=st.sampled_from(["low", "medium", "high", "critical"]),
    window_key=st.none() | _texts,
    rule_name=st.none() | _texts,
    first_seen=_times,
    last_seen=_times,
    resolved_at=st.none() | _times,
    last_value=_values,
    threshold=_values,
    metadata=st.dictionaries(_texts, st.integers() | _texts, max_size=3),
)
def test_snapshot_round_trips_through_its_json_form(**fields: Any) -> None:
    snapshot = IncidentSnapshot(
        id=INCIDENT_ID, status="open", source="src", description=None, **fields
    )
    stored = json.loads(json.dumps(snapshot.to_dict()))
    assert IncidentSnapshot.from_dict(stored) == snapshot


# ------------------------------------------------------------------------------------------------
# Webhook body
# ------------------------------------------------------------------------------------------------


def test_webhook_body_has_the_stable_schema() -> None:
    body = render_webhook(notification(), sent_at=NOW)
    assert set(body) == {
        "version",
        "event",
        "idempotency_key",
        "notification_id",
        "attempt",
        "sent_at",
        "incident",
    }
    assert body["version"] == "1"
    assert body["sent_at"] == "2024-05-01T12:00:30.000Z"
    assert set(body["incident"]) == {
        "id",
        "title",
        "description",
        "severity",
        "status",
        "source",
        "service",
        "rule",
        "metric_type",
        "condition",
        "threshold",
        "last_value",
        "peak_value",
        "first_seen",
        "last_seen",
        "resolved_at",
        "runbook_url",
        "dashboard_url",
        "metadata",
    }
    assert body["incident"]["service"] == "checkout"
    assert body["incident"]["rule"] == "high_error_rate"


def test_encode_json_is_deterministic_and_utf8() -> None:
    payload = {"b": 1, "a": "é"}
    assert encode_json(payload) == '{"a":"é","b":1}'.encode()
    with pytest.raises(ValueError):
        encode_json({"x": math.nan})


# ------------------------------------------------------------------------------------------------
# Slack
# ------------------------------------------------------------------------------------------------


def _slack_text(message: dict[str, Any]) -> str:
    return json.dumps(message)


def test_slack_message_carries_every_fact_and_both_links() -> None:
    message = render_slack(notification())
    assert message["text"].startswith(":large_orange_circle: [HIGH] open: high_error_rate")
    text = _slack_text(message)
    for fact in ("HIGH", "checkout", "high_error_rate", "0.1234 &gt; 0.05", "open"):
        assert fact in text
    actions = [block for block in message["blocks"] if block["type"] == "actions"]
    urls = [element["url"] for element in actions[0]["elements"]]
    assert urls == [
        "https://rtmh.example.com/incidents/" + INCIDENT_ID,
        "https://runbooks.example.com/checkout-errors",
    ]


def test_slack_escapes_control_characters_and_respects_limits() -> None:
    message = render_slack(notification(title="x" * 400, rule_name="<!channel> & co"))
    header = message["blocks"][0]
    assert len(header["text"]["text"]) <= 150
    assert "&lt;!channel&gt; &amp; co" in _slack_text(message)
    assert "<!channel>" not in _slack_text(message)


def test_slack_without_links_has_no_buttons_and_resolve_is_green() -> None:
    n = Notification(1, "k", "resolve", 1, incident(runbook_url=None), dashboard_url=None)
    message = render_slack(n)
    assert all(block["type"] != "actions" for block in message["blocks"])
    assert message["text"].startswith(":white_check_mark:")


# ------------------------------------------------------------------------------------------------
# PagerDuty
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "action"),
    [("open", "trigger"), ("update", "trigger"), ("repeat", "trigger"), ("resolve", "resolve")],
)
def test_pagerduty_actions_share_the_incident_dedup_key(event: str, action: str) -> None:
    path, body = render_pagerduty(notification(event), "R" * 32, NOW)
    assert path == "/v2/enqueue"
    assert body["event_action"] == action
    assert body["dedup_key"] == INCIDENT_ID
    assert body["routing_key"] == "R" * 32


@pytest.mark.parametrize(
    ("severity", "expected"),
    [("low", "info"), ("medium", "warning"), ("high", "error"), ("critical", "critical")],
)
def test_pagerduty_severity_mapping(severity: str, expected: str) -> None:
    _, body = render_pagerduty(notification(severity=severity), "key", NOW)
    assert body["payload"]["severity"] == expected


def test_pagerduty_trigger_payload() -> None:
    _, body = render_pagerduty(notification(title="y" * 2000), "key", NOW)
    payload = body["payload"]
    assert payload["source"] == "checkout"
    assert payload["component"] == "error_rate"
    assert len(payload["summary"]) <= 1024
    assert payload["custom_details"]["value_vs_threshold"] == "0.1234 > 0.05"
    assert [link["text"] for link in body["links"]] == ["RTMH dashboard", "Runbook"]


def test_pagerduty_test_is_a_change_event_that_pages_nobody() -> None:
    path, body = render_pagerduty(Notification.test("t-1", now=NOW), "key", NOW)
    assert path == "/v2/change/enqueue"
    assert "event_action" not in body and "dedup_key" not in body


# ------------------------------------------------------------------------------------------------
# Alertmanager
# ------------------------------------------------------------------------------------------------


def test_label_fingerprint_matches_prometheus() -> None:
    # Vectors from prometheus/common model/signature_test.go (LabelsToSignature).
    assert label_fingerprint({}) == f"{14695981039346656037:016x}"
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert label_fingerprint(labels) == f"{5799056148416392346:016x}"


def test_alertmanager_firing_payload() -> None:
    body = render_alertmanager(notification(), receiver="team-pager")
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "team-pager"
    assert body["groupKey"] == '{}:{alertname="high_error_rate", service="checkout"}'
    assert body["externalURL"] == "https://rtmh.example.com"
    [alert] = body["alerts"]
    assert alert["labels"] == {
        "alertname": "high_error_rate",
        "service": "checkout",
        "severity": "high",
        "source": "error_rate_monitor",
    }
    assert alert["annotations"]["summary"] == "Error rate above 5% on checkout"
    assert alert["annotations"]["runbook_url"] == "https://runbooks.example.com/checkout-errors"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["fingerprint"] == label_fingerprint(alert["labels"])
    assert all(isinstance(value, str) for value in alert["annotations"].values())


def test_alertmanager_resolved_payload_keeps_the_fingerprint() -> None:
    resolved_at = NOW + timedelta(minutes=5)
    firing = render_alertmanager(notification(), "r")["alerts"][0]
    body = render_alertmanager(notification("resolve", resolved_at=resolved_at), "r")
    assert body["status"] == "resolved"
    assert body["alerts"][0]["endsAt"] == "2024-05-01T12:05:30.000Z"
    assert body["alerts"][0]["fingerprint"] == firing["fingerprint"]


# ------------------------------------------------------------------------------------------------
# Email
# ------------------------------------------------------------------------------------------------


def _render_mail(n: Notification) -> EmailMessage:
    return render_email(n, "RTMH <rtmh@example.com>", ("oncall@example.com",), NOW)


def test_email_is_multipart_alternative_with_both_parts() -> None:
    message = _render_mail(notification())
    assert message.get_content_type() == "multipart/alternative"
    plain = message.get_body(("plain",))
    rich = message.get_body(("html",))
    assert plain is not None and rich is not None
    assert "Value vs threshold: 0.1234 > 0.05" in plain.get_content()
    assert "https://runbooks.example.com/checkout-errors" in rich.get_content()
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["References"] == f"<rtmh.incident.{INCIDENT_ID}@example.com>"


def test_email_message_id_derives_from_the_idempotency_key() -> None:
    first = _render_mail(notification())["Message-ID"]
    assert first == _render_mail(notification(attempt=3))["Message-ID"]
    assert first == message_id(notification().idempotency_key, "rtmh@example.com")
    assert first != _render_mail(notification("resolve"))["Message-ID"]
    assert first.startswith("<rtmh.") and first.endswith("@example.com>")


def test_email_html_escapes_incident_text() -> None:
    rich = _render_mail(notification(title="<script>alert(1)</script>")).get_body(("html",))
    assert rich is not None
    assert "<script>" not in rich.get_content()
    assert "&lt;script&gt;" in rich.get_content()


# ------------------------------------------------------------------------------------------------
# Channel config and validation
# ------------------------------------------------------------------------------------------------

SECRETS = {
    "hmac": "hmac-Sup3rSecret-value",
    "bearer": "Bearer tok-9f8e7d6c5b4a",
    "slack": "https://hooks.slack.com/services/T000/B000/XXXXslacktokenXXXX",
    "smtp": "smtp-pa55word-xyz",
    "pd": "R0UT1NGKEY0123456789abcdefABCDEF",
}


def channels_with_secrets() -> list[Channel]:
    return [
        parse_channel(
            "hook",
            "webhook",
            {"url": "https://hooks.example.com/rtmh", "headers": {"X-Team": "sre"}},
            {"hmac_secret": SECRETS["hmac"], "headers": {"Authorization": SECRETS["bearer"]}},
        ),
        parse_channel("am", "alertmanager", {"url": "http://am.example.com/hook"}, {}),
        parse_channel("chat", "slack", {}, {"url": SECRETS["slack"]}),
        parse_channel(
            "mail",
            "email",
            {
                "host": "smtp.example.com",
                "username": "rtmh",
                "starttls": True,
                "from_addr": "rtmh@example.com",
                "to_addrs": ["oncall@example.com"],
            },
            {"password": SECRETS["smtp"]},
        ),
        parse_channel("pd", "pagerduty", {}, {"routing_key": SECRETS["pd"]}),
    ]


def test_every_type_parses_with_defaults() -> None:
    hook, am, chat, mail, pd = (channel.settings for channel in channels_with_secrets())
    assert isinstance(hook, WebhookSettings) and hook.timeout_seconds == 5.0
    assert not hook.alertmanager_format
    assert isinstance(am, WebhookSettings) and am.alertmanager_format
    assert isinstance(chat, SlackSettings) and chat.url.reveal() == SECRETS["slack"]
    assert isinstance(mail, EmailSettings) and mail.port == 587 and mail.starttls
    assert isinstance(pd, PagerDutySettings) and pd.base_url == "https://events.pagerduty.com"


def test_channel_from_row() -> None:
    row = {"name": "pd", "type": "pagerduty", "config": {}, "secrets": {"routing_key": "k"}}
    assert Channel.from_row(row).type == "pagerduty"


_URL = {"url": "https://x"}
_MAIL = {"host": "h", "from_addr": "a@b", "to_addrs": ["c@d"]}


@pytest.mark.parametrize(
    ("type_", "config", "secrets", "field"),
    [
        ("sms", {}, {}, "type"),
        ("webhook", {}, {}, "config.url"),
        ("webhook", {"url": "ftp://x"}, {}, "config.url"),
        ("webhook", {"url": "https://user:pw@x/"}, {}, "config.url"),
        ("webhook", {**_URL, "timeout": 3}, {}, "config.timeout"),
        ("webhook", {**_URL, "timeout_seconds": 0}, {}, "config.timeout_seconds"),
        ("webhook", {**_URL, "timeout_seconds": "5"}, {}, "config.timeout_seconds"),
        ("webhook", {**_URL, "alertmanager_format": "no"}, {}, "config.alertmanager_format"),
        ("webhook", {**_URL, "headers": {"X-RTMH-Event": "x"}}, {}, "config.headers.X-RTMH-Event"),
        ("webhook", {**_URL, "headers": {"X-A": "a\r\nB: c"}}, {}, "config.headers.X-A"),
        ("webhook", _URL, {"hmac_secret": ""}, "secrets.hmac_secret"),
        ("webhook", _URL, {"hmac": "s"}, "secrets.hmac"),
        ("alertmanager", {**_URL, "alertmanager_format": False}, {}, "config.alertmanager_format"),
        ("slack", {}, {}, "config.url"),
        ("slack", {"url": "https://a"}, {"url": "https://b"}, "config.url"),
        ("email", {**_MAIL, "host": None}, {}, "config.host"),
        ("email", {**_MAIL, "to_addrs": []}, {}, "config.to_addrs"),
        ("email", {**_MAIL, "from_addr": "nobody"}, {}, "config.from_addr"),
        ("email", {**_MAIL, "port": 0}, {}, "config.port"),
        ("email", {**_MAIL, "use_tls": True, "starttls": True}, {}, "config.starttls"),
        ("email", _MAIL, {"password": "p"}, "secrets.password"),
        ("pagerduty", {}, {}, "secrets.routing_key"),
        ("pagerduty", {"base_url": "localhost"}, {"routing_key": "k"}, "config.base_url"),
    ],
)  # fmt: skip
def test_invalid_config_names_the_field(
    type_: str, config: dict[str, Any], secrets: dict[str, Any], field: str
) -> None:
    with pytest.raises(ChannelConfigError) as caught:
        parse_channel("c1", type_, config, secrets)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"channel 'c1': {field}: ")


def test_config_errors_never_echo_secret_values() -> None:
    with pytest.raises(ChannelConfigError) as caught:
        parse_channel("c", "webhook", {"url": "https://x"}, {"hmac_secret": ["s3cr3t-list"]})
    assert "s3cr3t" not in str(caught.value)


def test_email_ports_follow_the_tls_mode() -> None:
    base = {"host": "h", "from_addr": "a@b.c", "to_addrs": ["c@d.e"]}
    assert isinstance(settings := parse_channel("e", "email", base, {}).settings, EmailSettings)
    assert settings.port == 25
    implicit = parse_channel("e", "email", {**base, "use_tls": True}, {}).settings
    assert isinstance(implicit, EmailSettings) and implicit.port == 465


# ------------------------------------------------------------------------------------------------
# Secrets never leak
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("render", [repr, str, lambda c: repr(c.settings), lambda c: f"{c}"])
def test_channel_text_forms_hold_no_secret(render: Any) -> None:
    for channel in channels_with_secrets():
        text = render(channel)
        for secret in SECRETS.values():
            assert secret not in text, (channel.name, text)
        assert "slacktoken" not in text


def test_redact_masks_secrets_and_the_slack_token_path() -> None:
    shown = [redact(channel) for channel in channels_with_secrets()]
    dumped = json.dumps(shown)
    for secret in SECRETS.values():
        assert secret not in dumped
    assert shown[0]["secrets"] == {"headers": "***", "hmac_secret": "***"}
    assert shown[0]["config"]["headers"] == {"X-Team": "sre"}
    assert shown[4]["secrets"] == {"routing_key": "***"}
    config_slack = parse_channel("s", "slack", {"url": SECRETS["slack"]}, {})
    assert redact(config_slack)["config"]["url"] == "https://hooks.slack.com/***"


def test_redact_masks_credential_looking_config_headers() -> None:
    channel = parse_channel(
        "w", "webhook", {"url": "https://x", "headers": {"X-Api-Key": "k-123", "X-Env": "p"}}, {}
    )
    assert redact(channel)["config"]["headers"] == {"X-Api-Key": "***", "X-Env": "p"}


def test_secret_refuses_to_be_pickled_or_printed() -> None:
    secret = Secret("value-123")
    assert str(secret) == "***" and "value-123" not in repr(secret)
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_secret_values_cover_every_secret() -> None:
    hook, _, chat, mail, pd = channels_with_secrets()
    assert set(hook.secret_values()) == {SECRETS["hmac"], SECRETS["bearer"]}
    assert chat.secret_values() == (SECRETS["slack"],)
    assert mail.secret_values() == (SECRETS["smtp"],)
    assert pd.secret_values() == (SECRETS["pd"],)


def test_scrub_and_excerpt() -> None:
    assert scrub("key=abc and abcdef", ["abc", "abcdef"]) == "key=*** and ***"
    text = "x" * 495 + "SECRET" + "y" * 100
    cut = excerpt(text, ["SECRET"])
    assert len(cut) == 500 and "SECRET" not in cut and "SEC" not in cut


def test_max_attempt_seconds_bounds_each_type() -> None:
    hook, _, _, mail, _ = channels_with_secrets()
    assert max_attempt_seconds(hook) == 7.0
    assert max_attempt_seconds(mail) == 15.0


# ------------------------------------------------------------------------------------------------
# Signing and retry classification
# ------------------------------------------------------------------------------------------------


def test_sign_matches_a_known_hmac_sha256_vector() -> None:
    # RFC 4231 test case 2.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign("Jefe", b"what do ya want for nothing?") == "sha256=" + expected


def test_verify_signature() -> None:
    body = b'{"event":"open"}'
    header = sign("s3cret", body)
    assert verify_signature("s3cret", body, header)
    assert verify_signature(b"s3cret", body, f"  {header} ")
    assert not verify_signature("s3cret", body + b" ", header)
    assert not verify_signature("other", body, header)
    assert not verify_signature("s3cret", body, None)
    assert not verify_signature("s3cret", body, "sha256=zz")
    assert not verify_signature("s3cret", body, "sha256=é")


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (403, False), (404, False), (408, True), (410, False),
     (422, False), (429, True), (500, True), (502, True), (503, True), (504, True)],
)  # fmt: skip
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    later = parse_retry_after("Wed, 01 May 2024 12:01:30 GMT", now=NOW)
    assert later == 60.0
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=NOW) == 0.0


def test_parsing_the_same_row_twice_gives_equal_channels() -> None:
    first, second = channels_with_secrets(), channels_with_secrets()
    assert first == second
    other = parse_channel("pd", "pagerduty", {}, {"routing_key": "another-key"})
    assert first[4] != other
