"""The REST API for real: `rtmh api` as a process on a migrated PostgreSQL, driven over HTTP.

Each resource's happy path and its refusals (401, 403, 404, 409, 413, 422, 429), the incident
actions and the timeline rows they write, and tokens made and revoked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from .api_support import Api, expect_problem, running_api
from .api_support import insert_incident as _incident


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(module_db_url, tmp_path_factory.mktemp("api")) as running:
        yield running


# --- service routes, docs ---------------------------------------------------------------------
def test_health_ready_metrics_and_offline_docs(api: Api) -> None:
    with httpx.Client(base_url=api.url) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        schema = client.get("/openapi.json").json()
        assert schema["openapi"].startswith("3.1")
        assert "/api/v1/incidents" in schema["paths"]
        docs = client.get("/docs")
        assert docs.status_code == 200
        assert "cdn" not in docs.text.lower() and "https://" not in docs.text
        for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
            assert client.get(f"/docs-assets/{asset}").status_code == 200
        metrics = client.get("/metrics").text
        assert 'rtmh_api_requests_total{method="GET",route="/healthz",status="200"}' in metrics


def test_readyz_says_which_migration_is_missing(module_db_url: str, tmp_path: Path) -> None:
    with psycopg.connect(module_db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET version = 'x' WHERE version = '007_api.sql'")
    try:
        with (
            running_api(module_db_url, tmp_path, token_prefix="unready", wait_ready=False) as other,
            httpx.Client(base_url=other.url) as client,
        ):
            body = expect_problem(client.get("/readyz"), 503)
            assert (
                body["detail"] == "migrations not current (pending 007_api.sql): run rtmh migrate"
            )
            assert client.get("/healthz").status_code == 200
    finally:
        with psycopg.connect(module_db_url, autocommit=True) as conn:
            conn.execute("UPDATE schema_migrations SET version = '007_api.sql' WHERE version = 'x'")


# --- tokens and scopes ------------------------------------------------------------------------
def test_every_route_needs_a_token_of_enough_scope(api: Api) -> None:
    with api.client(None) as anonymous:
        body = expect_problem(anonymous.get("/api/v1/incidents"), 401)
        assert "Authorization: Bearer" in body["detail"]
        assert anonymous.get("/api/v1/incidents").headers["www-authenticate"].startswith("Bearer")
    with httpx.Client(base_url=api.url, headers={"Authorization": "Bearer rtmh_nope"}) as bad:
        expect_problem(bad.get("/api/v1/rules"), 401)
    with api.client("read") as reader:
        assert reader.get("/api/v1/rules").status_code == 200
        body = expect_problem(reader.post("/api/v1/silences", json={}), 403)
        assert "'write'" in body["detail"]
        expect_problem(reader.get("/api/v1/tokens"), 403)
    with api.client("write") as writer:
        expect_problem(writer.post("/api/v1/tokens", json={"name": "x", "scope": "read"}), 403)


def test_tokens_are_made_listed_and_revoked_without_secrets(api: Api) -> None:
    with api.client("admin") as admin:
        made = admin.post("/api/v1/tokens", json={"name": "ci-bot", "scope": "read"})
        assert made.status_code == 201, made.text
        token = made.json()["token"]
        assert token.startswith("rtmh_")
        expect_problem(admin.post("/api/v1/tokens", json={"name": "ci-bot", "scope": "read"}), 409)
        listed = admin.get("/api/v1/tokens").text
        assert token not in listed and token.split("_", 2)[2] not in listed
        assert "ci-bot" in listed and "secret_hash" not in listed and "salt" not in listed
        with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as bot:
            assert bot.get("/api/v1/incidents").status_code == 200
            assert admin.post("/api/v1/tokens/ci-bot/revoke").status_code == 200
            expect_problem(bot.get("/api/v1/incidents"), 401)
        expect_problem(admin.post("/api/v1/tokens/ci-bot/revoke"), 404)
    with psycopg.connect(api.db_url) as conn:
        stored = conn.execute("SELECT secret_hash FROM api_tokens WHERE name = 'ci-bot'").fetchone()
    assert stored is not None and token.split("_", 2)[2].encode() not in bytes(stored[0])


def test_failed_token_checks_are_rate_limited_per_address(
    module_db_url: str, tmp_path: Path
) -> None:
    limits = {"RTMH_API_AUTH_FAILURES_PER_MINUTE": "3"}
    with running_api(module_db_url, tmp_path, limits, token_prefix="limited") as limited:
        with httpx.Client(base_url=limited.url, headers={"Authorization": "Bearer wrong"}) as bad:
            for _ in range(3):
                expect_problem(bad.get("/api/v1/incidents"), 401)
            refused = expect_problem(bad.get("/api/v1/incidents"), 429)
            assert "try again" in refused["detail"]
            assert int(bad.get("/api/v1/incidents").headers["retry-after"]) >= 1
        with limited.client("read") as good:
            # the address is blocked, whatever it presents, until its minute is over
            expect_problem(good.get("/api/v1/incidents"), 429)


# --- request shape ----------------------------------------------------------------------------
def test_body_limit_unknown_fields_and_unknown_routes(api: Api) -> None:
    with api.client("write") as writer:
        big = {"matchers": {"service": "x"}, "comment": "y" * 2_000_000, "duration_seconds": 60}
        body = expect_problem(writer.post("/api/v1/silences", json=big), 413)
        assert "RTMH_API_MAX_BODY_BYTES" in body["detail"]
        typo = {"matchers": {"service": "x"}, "duration_seconds": 60, "coment": "typo"}
        body = expect_problem(writer.post("/api/v1/silences", json=typo), 422)
        assert body["errors"][0]["field"] == "coment"
        assert "unknown field" in body["errors"][0]["message"]
        expect_problem(writer.get("/api/v1/nothing-here"), 404)
        expect_problem(writer.get("/api/v1/incidents/not-a-uuid"), 404)
        expect_problem(writer.get(f"/api/v1/incidents/{uuid.uuid4()}"), 404)
        expect_problem(
            writer.post(
                "/api/v1/rules", content=b"{not json", headers={"content-type": "application/json"}
            ),
            422,
        )


# --- rules --------------------------------------------------------------------------------------
def test_rules_crud_with_the_engines_validation(api: Api) -> None:
    rule = {
        "name": "api-checkout-errors",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
        "window_key_pattern": "checkout",
        "severity": "high",
    }
    with api.client("write") as writer:
        created = writer.post("/api/v1/rules", json=rule)
        assert created.status_code == 201, created.text
        rule_id = created.json()["id"]
        assert created.json()["min_count"] == 20  # the column default, as validate_rule says
        expect_problem(writer.post("/api/v1/rules", json=rule), 409)
        bad = expect_problem(
            writer.post("/api/v1/rules", json={**rule, "name": "x", "threshold": "high"}), 422
        )
        assert bad["errors"][0]["field"] == "threshold"
        assert "must be a number" in bad["errors"][0]["message"]
        bad = expect_problem(
            writer.post("/api/v1/rules", json={**rule, "name": "y", "threshhold": 1}), 422
        )
        assert bad["errors"][0] == {"field": "threshhold", "message": "unknown field"}
        bad = expect_problem(
            writer.post("/api/v1/rules", json={**rule, "name": "z", "channels": ["nope"]}), 422
        )
        assert "no channel named 'nope'" in bad["detail"]
        assert writer.get("/api/v1/rules/api-checkout-errors").json()["id"] == rule_id
        patched = writer.patch(f"/api/v1/rules/{rule_id}", json={"threshold": 0.1})
        assert patched.status_code == 200 and patched.json()["threshold"] == 0.1
        bad = expect_problem(
            writer.patch(f"/api/v1/rules/{rule_id}", json={"recovery_threshold": 0.5}), 422
        )
        assert bad["errors"][0]["field"] == "recovery_threshold"
        assert writer.post(f"/api/v1/rules/{rule_id}/disable").json()["enabled"] is False
        assert writer.post(f"/api/v1/rules/{rule_id}/enable").json()["enabled"] is True
        replaced = writer.put(f"/api/v1/rules/{rule_id}", json={**rule, "threshold": 0.2})
        assert replaced.json()["threshold"] == 0.2
        assert writer.delete(f"/api/v1/rules/{rule_id}").status_code == 204
        expect_problem(writer.get(f"/api/v1/rules/{rule_id}"), 404)
    with api.client("read") as reader:
        expect_problem(reader.post("/api/v1/rules", json=rule), 403)


def test_a_rule_managed_by_a_config_file_is_edited_only_when_forced(api: Api) -> None:
    rule = {"name": "api-file-rule", "metric_type": "log_count", "condition": ">", "threshold": 9}
    with api.client("write") as writer:
        created = writer.post("/api/v1/rules", json=rule)
        assert created.status_code == 201, created.text
        # what `rtmh config apply` marks (tests/integration/test_config_cli.py drives apply)
        with psycopg.connect(api.db_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE alert_rules SET managed_by = 'alerts/prod.yaml' WHERE name = %s",
                (rule["name"],),
            )
        url = "/api/v1/rules/api-file-rule"
        for attempt in (
            writer.patch(url, json={"threshold": 10}),
            writer.put(url, json={**rule, "threshold": 10}),
            writer.post(f"{url}/disable"),
            writer.post(f"{url}/enable"),
            writer.delete(url),
        ):
            body = expect_problem(attempt, 409)
            assert body["detail"] == (
                "rule 'api-file-rule' is managed by the config file alerts/prod.yaml (rtmh config "
                "apply); change it there and apply, or add ?force=true to edit it here anyway "
                "(the next apply puts the file's version back)"
            )
        assert writer.get(url).json()["threshold"] == 9
        bad = expect_problem(writer.post("/api/v1/rules", json={**rule, "managed_by": "x"}), 422)
        assert bad["errors"][0]["field"] == "managed_by"
        forced = writer.patch(f"{url}?force=true", json={"threshold": 10})
        assert forced.status_code == 200 and forced.json()["threshold"] == 10
        assert writer.post(f"{url}/disable?force=true").json()["enabled"] is False
        assert writer.delete(f"{url}?force=true").status_code == 204


# --- incidents ----------------------------------------------------------------------------------
def _timeline(db_url: str, incident: str) -> list[tuple[str, str | None, str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT event_type, to_status, actor FROM incident_events WHERE incident_id = %s "
            "ORDER BY id",
            (incident,),
        ).fetchall()
    return [(str(a), b, str(c)) for a, b, c in rows]


def test_incident_actions_follow_the_workflow_and_write_the_timeline(api: Api) -> None:
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO notification_channels (name, type, config) "
            "VALUES ('ops-hook', 'webhook', '{\"url\": \"https://hooks.example.com/x\"}')"
        )
        conn.execute(
            "INSERT INTO alert_rules (name, metric_type, condition, threshold, channels) "
            "VALUES ('api-actions', 'error_rate', '>', 0.05, '{ops-hook}')"
        )
    incident = _incident(api.db_url, rule="api-actions")
    with api.client("write") as writer:
        acked = writer.post(f"/api/v1/incidents/{incident}/acknowledge", json={"message": "on it"})
        assert acked.status_code == 200, acked.text
        assert acked.json()["status"] == "investigating"
        body = expect_problem(writer.post(f"/api/v1/incidents/{incident}/reopen"), 409)
        assert "investigating -> open is not allowed" in body["detail"]
        assigned = writer.post(f"/api/v1/incidents/{incident}/assign", json={"assignee": "ana"})
        assert assigned.json()["assignee"] == "ana"
        noted = writer.post(f"/api/v1/incidents/{incident}/notes", json={"message": "rolled back"})
        assert noted.status_code == 200
        expect_problem(
            writer.post(f"/api/v1/incidents/{incident}/notes", json={"message": ""}), 422
        )
        resolved = writer.post(f"/api/v1/incidents/{incident}/resolve")
        assert resolved.json()["status"] == "resolved"
        assert writer.post(f"/api/v1/incidents/{incident}/close").json()["status"] == "closed"
        expect_problem(writer.post(f"/api/v1/incidents/{incident}/reopen"), 409)
        detail = writer.get(f"/api/v1/incidents/{incident}").json()
    assert _timeline(api.db_url, incident) == [
        ("status_changed", "investigating", "test-write"),
        ("assigned", None, "test-write"),
        ("comment", None, "test-write"),
        ("resolved", "resolved", "test-write"),
        ("closed", "closed", "test-write"),
    ]
    assert [e["event_type"] for e in detail["timeline"]][-1] == "closed"
    assert detail["why"] == {"value": 0.3, "threshold": 0.05}
    # acknowledging told the channel someone is on it; resolving sent the one 'resolve'
    assert sorted(n["event"] for n in detail["notifications"]) == ["resolve", "update"]
    assert all(n["channel"] == "ops-hook" for n in detail["notifications"])


def test_incident_list_filters_and_pages_without_gaps_or_repeats(api: Api) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    made = [
        _incident(
            api.db_url,
            window_key="pager-list",
            severity="critical" if i % 2 else "low",
            created_at=base + timedelta(minutes=i),
        )
        for i in range(7)
    ]
    with api.client("read") as reader:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"service": "pager-list", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = reader.get("/api/v1/incidents", params=params).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(made))
        critical = reader.get(
            "/api/v1/incidents", params={"service": "pager-list", "severity": "critical"}
        ).json()["items"]
        assert {i["id"] for i in critical} == set(made[1::2])
        window = reader.get(
            "/api/v1/incidents",
            params={
                "service": "pager-list",
                "since": (base + timedelta(minutes=2)).isoformat(),
                "until": (base + timedelta(minutes=4)).isoformat(),
            },
        ).json()["items"]
        assert [i["id"] for i in window] == [made[3], made[2]]
        body = expect_problem(reader.get("/api/v1/incidents", params={"status": "sleeping"}), 422)
        assert body["errors"][0]["field"].startswith("status")
        expect_problem(reader.get("/api/v1/incidents", params={"cursor": "garbage"}), 422)


# --- silences -----------------------------------------------------------------------------------
def test_silences_are_created_listed_and_expired(api: Api) -> None:
    with api.client("write") as writer:
        made = writer.post(
            "/api/v1/silences",
            json={
                "matchers": {"service": "checkout", "severity": "low"},
                "duration_seconds": 7200,
                "comment": "maintenance",
            },
        )
        assert made.status_code == 201, made.text
        silence = made.json()
        assert silence["state"] == "active" and silence["created_by"] == "test-write"
        assert silence["matchers"] == {"service": "checkout", "severity": "low"}
        active = writer.get("/api/v1/silences", params={"state": "active"}).json()
        assert silence["id"] in [s["id"] for s in active]
        expired = writer.post(f"/api/v1/silences/{silence['id']}/expire").json()
        assert expired["state"] == "expired"
        assert writer.post(f"/api/v1/silences/{silence['id']}/expire").json()["state"] == "expired"
        expect_problem(
            writer.post("/api/v1/silences", json={"matchers": {}, "duration_seconds": 60}), 422
        )
        body = expect_problem(
            writer.post("/api/v1/silences", json={"matchers": {"service": "x"}}), 422
        )
        assert "ends_at or duration_seconds" in body["detail"]
        expect_problem(writer.post("/api/v1/silences/999999/expire"), 404)


def test_backtest_a_saved_or_unsaved_rule_over_stored_windows(api: Api) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        # 20 minutes of 60-s windows sliding by 10 s; 50 % errors for the windows starting in
        # minutes 5 to 8
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value,"
            " count, sum) "
            "SELECT 'bt-svc', 'error_rate', s, s + interval '60 seconds', e / 100.0, 100, e "
            "FROM generate_series(%s::timestamptz, %s::timestamptz + interval '20 minutes',"
            " interval '10 seconds') AS s, "
            "LATERAL (SELECT CASE WHEN s >= %s::timestamptz + interval '5 minutes' "
            "AND s < %s::timestamptz + interval '8 minutes' THEN 50 ELSE 1 END AS e) AS x",
            (start, start, start, start),
        )
    rule = {
        "name": "bt-rule",
        "metric_type": "error_rate",
        "condition": ">",
        "threshold": 0.05,
        "window_key_pattern": "bt-*",
    }
    body = {"start": start.isoformat(), "end": (start + timedelta(minutes=30)).isoformat()}
    with api.client("read") as reader:
        found = reader.post("/api/v1/rules/backtest", json={**body, "rule": rule})
        assert found.status_code == 200, found.text
        result = found.json()
        assert result["summary"]["incidents"] == 1 and result["summary"]["keys_matched"] == 1
        incident = result["incidents"][0]
        assert incident["window_key"] == "bt-svc"
        opened = datetime.fromisoformat(incident["opened_at"])
        # judged at window close: the first 50 % window starts at minute 5 and closes at 6
        assert opened == start + timedelta(minutes=6)
        assert incident["resolved_at"] is not None
        bad = expect_problem(
            reader.post(
                "/api/v1/rules/backtest", json={**body, "rule": {**rule, "threshold": "x"}}
            ),
            422,
        )
        assert bad["errors"][0]["field"] == "rule.threshold"
        expect_problem(
            reader.post("/api/v1/rules/backtest", json={**body, "rule": "no-such-rule"}), 404
        )
        backwards = {"start": body["end"], "end": body["start"], "rule": rule}
        expect_problem(reader.post("/api/v1/rules/backtest", json=backwards), 422)
    with api.client("write") as writer:
        assert writer.post("/api/v1/rules", json=rule).status_code == 201
        saved = writer.post("/api/v1/rules/backtest", json={**body, "rule": "bt-rule"}).json()
        assert saved["incidents"] == result["incidents"]
