"""Channels over the API: write-only secrets, the target policy at write time, a test send that
really reaches a receiver (signed both ways), and deletion refused while a rule uses one."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from rtmh.notify.channels.webhook import verify_signature, verify_standard_signature

from ..receivers import ALLOW_LOOPBACK, HttpReceiver
from .api_support import Api, running_api

HMAC_SECRET = "hmac-secret-do-not-leak-7c1f"
STANDARD_SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXXsecretXXXX"


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An API that may reach 127.0.0.1 (the test receiver), as `rtmh up --demo` allows."""
    allow = {"RTMH_ALLOWED_TARGETS": ALLOW_LOOPBACK}
    with running_api(module_db_url, tmp_path_factory.mktemp("api"), allow, token_prefix="ch") as a:
        yield a


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(secret=HMAC_SECRET) as server:
        yield server


def _status(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return dict(response.json()) if response.content else {}


def test_secrets_are_write_only_and_a_test_send_reaches_the_receiver(
    api: Api, receiver: HttpReceiver
) -> None:
    channel = {
        "name": "ops-webhook",
        "type": "webhook",
        "config": {"url": receiver.url_for("/hook")},
        "secrets": {"hmac_secret": HMAC_SECRET, "standard_webhooks_secret": STANDARD_SECRET},
    }
    with api.client("admin") as admin:
        made = _status(admin.post("/api/v1/channels", json=channel), 201)
        assert made["secrets"] == {"hmac_secret": "set", "standard_webhooks_secret": "set"}
        _status(admin.post("/api/v1/channels", json=channel), 409)
        result = _status(admin.post("/api/v1/channels/ops-webhook/test"), 200)
        assert result["ok"] is True and result["http_status"] == 200, result
        (request,) = receiver.wait_for(1)
        assert request.signature_valid is True
        assert verify_signature(HMAC_SECRET, request.body, request.header("X-RTMH-Signature"))
        assert verify_standard_signature(
            STANDARD_SECRET, request.headers, request.body, datetime.now(UTC)
        )
        # an update that does not name the secrets keeps them
        changed = {"type": "webhook", "config": {"url": receiver.url_for("/other")}}
        assert _status(admin.put("/api/v1/channels/ops-webhook", json=changed), 200)["secrets"] == {
            "hmac_secret": "set",
            "standard_webhooks_secret": "set",
        }
        dropped = {**changed, "secrets": {"standard_webhooks_secret": None}}
        shown = _status(admin.put("/api/v1/channels/ops-webhook", json=dropped), 200)
        assert shown["secrets"] == {"hmac_secret": "set"}
        everything = (
            admin.get("/api/v1/channels").text + admin.get("/api/v1/channels/ops-webhook").text
        )
    slack = {"name": "team-slack", "type": "slack", "secrets": {"url": SLACK_URL}}
    with api.client("admin") as admin:
        # hooks.slack.com cannot be resolved offline: refused at write time, naming the field,
        # and the secret URL is in no answer
        refused = admin.post("/api/v1/channels", json=slack)
        everything += refused.text
    for secret in (HMAC_SECRET, STANDARD_SECRET, STANDARD_SECRET[6:], "XXXXsecretXXXX"):
        assert secret not in everything
        assert secret not in api.log_text()


def test_targets_the_policy_refuses_are_refused_when_saved(
    module_db_url: str, tmp_path: Path
) -> None:
    # no allow-list: loopback and private addresses are refused too
    with (
        running_api(module_db_url, tmp_path, token_prefix="strict") as strict,
        strict.client() as admin,
    ):
        for url, why in (
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
            ("http://[::ffff:169.254.169.254]/", "169.254.169.254"),
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://localhost:9/hook", "loopback"),
            ("http://10.1.2.3/hook", "RTMH_ALLOWED_TARGETS"),
            ("ftp://example.com/x", "http"),
            ("http://user:pw@example.com/x", "credentials"),
        ):
            response = admin.post(
                "/api/v1/channels",
                json={"name": "bad", "type": "webhook", "config": {"url": url}},
            )
            body = _status(response, 422)
            assert body["errors"][0]["field"] == "config.url", (url, body)
            assert why in body["detail"], (url, body)
        assert admin.get("/api/v1/channels/bad").status_code == 404


def test_scopes_unknown_keys_and_deleting_a_channel_in_use(
    api: Api, receiver: HttpReceiver
) -> None:
    channel = {"name": "ops-2", "type": "webhook", "config": {"url": receiver.url}}
    with api.client("write") as writer:
        _status(writer.post("/api/v1/channels", json=channel), 403)
    with api.client("admin") as admin:
        body = _status(
            admin.post(
                "/api/v1/channels", json={**channel, "config": {"url": receiver.url, "timeout": 3}}
            ),
            422,
        )
        assert body["errors"][0]["field"] == "config.timeout"
        _status(admin.post("/api/v1/channels", json=channel), 201)
        rule = {
            "name": "uses-ops-2",
            "metric_type": "error_rate",
            "condition": ">",
            "threshold": 0.1,
            "channels": ["ops-2"],
        }
        _status(admin.post("/api/v1/rules", json=rule), 201)
        body = _status(admin.delete("/api/v1/channels/ops-2"), 409)
        assert "uses-ops-2" in body["detail"]
        _status(admin.delete("/api/v1/rules/uses-ops-2"), 204)
        _status(admin.delete("/api/v1/channels/ops-2"), 204)
        _status(admin.get("/api/v1/channels/ops-2"), 404)
        _status(admin.post("/api/v1/channels/ops-2/test"), 404)
    with api.client("read") as reader:
        assert reader.get("/api/v1/channels").status_code == 200
