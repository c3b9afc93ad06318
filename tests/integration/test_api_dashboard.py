"""The dashboard's side of the API for real: the page and its files, signing in with a one-time
link or a pasted token, the cookie's limits, and the reads only the dashboard needed (the
notifications log, the services table, the dead-letter summary), on `rtmh api` over HTTP.

What the page does with them is tested in a browser (test_dashboard_browser.py).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from rtmh.service.sessions import create_login_code

from .api_support import Api, expect_problem, insert_incident, make_token, running_api

DASHBOARD = {"X-RTMH-Dashboard": "1"}


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(
        module_db_url, tmp_path_factory.mktemp("api-dash"), token_prefix="dash"
    ) as running:
        yield running


def _code(db_url: str, token_name: str) -> str:
    async def run() -> str:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return (await create_login_code(conn, token_name)).text

    return asyncio.run(run())


@contextmanager
def _signed_in(api: Api, token_name: str) -> Iterator[httpx.Client]:
    """A cookie-holding client signed in through a one-time link, as a browser would be."""
    with httpx.Client(base_url=api.url, timeout=30) as client:
        answer = client.get("/login", params={"code": _code(api.db_url, token_name)})
        assert answer.status_code == 303, answer.text
        yield client


# --- the page -----------------------------------------------------------------------------------
def test_every_page_path_serves_the_page_with_a_strict_policy(api: Api) -> None:
    with httpx.Client(base_url=api.url) as client:
        for path in ("/", "/incidents/0b5b3f8e-0000-4000-8000-000000000000", "/rules/x", "/login"):
            page = client.get(path)
            assert page.status_code == 200, path
            assert page.headers["content-type"].startswith("text/html")
            assert '<script type="module" src="/assets/app.js">' in page.text
            policy = page.headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert page.headers["referrer-policy"] == "no-referrer"
        script = client.get("/assets/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["x-content-type-options"] == "nosniff"
        assert client.get("/no-such-page").status_code == 404
        assert client.get("/assets/../__init__.py").status_code == 404


def test_the_page_loads_nothing_from_another_host() -> None:
    """Every asset is in the package: no CDN, no web font, nothing fetched from the internet.
    (The browser tests also watch every request the pages make.) Example URLs shown in a form
    are text, not loads: only what makes a browser fetch is checked."""
    from importlib import resources

    web = resources.files("rtmh") / "web"
    html = (web / "index.html").read_text()
    for target in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html):
        assert target.startswith(("/", "#", "data:")) and not target.startswith("//"), target
    for asset in (web / "assets").iterdir():
        text = asset.read_text()
        if asset.name.endswith(".css"):
            for target in re.findall(r"""(?:url\(|@import)\s*["']?([^"')\s]+)""", text):
                assert target.startswith(("/", "data:")) or "/" not in target, target
        if asset.name.endswith(".js"):
            statics = re.findall(
                r"""^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)""", text, re.M
            )
            dynamic = re.findall(r"""\bimport\(\s*["']([^"']+)""", text)
            for target in statics + dynamic:
                assert target.startswith(("./", "/")) and not target.startswith("//"), target
            assert "fetch('http" not in text and 'fetch("http' not in text


# --- signing in ---------------------------------------------------------------------------------
def test_a_one_time_link_signs_in_once_and_the_cookie_acts_as_its_token(api: Api) -> None:
    make_token(api.db_url, "dash-oncall", "write")
    code = _code(api.db_url, "dash-oncall")
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        answer = browser.get("/login", params={"code": code, "next": "/incidents?status=open"})
        assert answer.status_code == 303
        # the code is gone from the address the browser lands on
        assert answer.headers["location"] == "/incidents?status=open"
        cookie = answer.headers["set-cookie"].lower()
        assert "rtmh_session=rtmhs_" in cookie
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        me = browser.get("/api/v1/session")
        assert me.status_code == 200, me.text
        assert me.json() == {"name": "dash-oncall", "scope": "write", "via": "cookie"}
    with httpx.Client(base_url=api.url, timeout=30) as other:
        again = other.get("/login", params={"code": code})
        assert again.status_code == 303
        assert again.headers["location"] == "/login?error=used-or-expired"
        assert "set-cookie" not in again.headers
        assert other.get("/api/v1/session").status_code == 401


def test_a_sign_in_goes_only_to_a_path_of_this_site(api: Api) -> None:
    for wanted in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "rules"):
        make_token(api.db_url, f"dash-next-{len(wanted)}", "read")
        code = _code(api.db_url, f"dash-next-{len(wanted)}")
        with httpx.Client(base_url=api.url, timeout=30) as browser:
            answer = browser.get("/login", params={"code": code, "next": wanted})
            assert answer.headers["location"] == "/", wanted


def test_a_cookie_change_needs_the_dashboard_header(api: Api) -> None:
    """A form on another site (or another port of this host) can make the browser send the
    cookie, but not a custom header without a preflight: such a change is refused."""
    make_token(api.db_url, "dash-writer", "write")
    incident = insert_incident(api.db_url, window_key="dash-csrf")
    with _signed_in(api, "dash-writer") as browser:
        forged = browser.post(f"/api/v1/incidents/{incident}/acknowledge", json={})
        body = expect_problem(forged, 403)
        assert "X-RTMH-Dashboard" in body["detail"]
        done = browser.post(f"/api/v1/incidents/{incident}/acknowledge", json={}, headers=DASHBOARD)
        assert done.status_code == 200, done.text
    with psycopg.connect(api.db_url) as conn:
        actor = conn.execute(
            "SELECT actor FROM incident_events WHERE incident_id = %s AND to_status = "
            "'investigating'",
            (incident,),
        ).fetchone()
    assert actor == ("dash-writer",)


def test_the_cookie_keeps_its_tokens_scope(api: Api) -> None:
    make_token(api.db_url, "dash-reader", "read")
    incident = insert_incident(api.db_url, window_key="dash-scope")
    with _signed_in(api, "dash-reader") as browser:
        assert browser.get("/api/v1/incidents", params={"limit": 1}).status_code == 200
        refused = browser.post(
            f"/api/v1/incidents/{incident}/acknowledge", json={}, headers=DASHBOARD
        )
        assert "needs 'write'" in expect_problem(refused, 403)["detail"]


def test_signing_out_or_revoking_the_token_ends_the_session(api: Api) -> None:
    make_token(api.db_url, "dash-leaver", "read")
    make_token(api.db_url, "dash-revoked", "read")
    with _signed_in(api, "dash-leaver") as browser:
        assert browser.get("/api/v1/session").status_code == 200
        stolen = dict(browser.cookies)
        assert browser.delete("/api/v1/session", headers=DASHBOARD).status_code == 204
        assert browser.get("/api/v1/session").status_code == 401
    with httpx.Client(base_url=api.url, cookies=stolen) as replay:
        expect_problem(replay.get("/api/v1/session"), 401)
    with _signed_in(api, "dash-revoked") as browser:
        assert browser.get("/api/v1/session").status_code == 200
        with api.client("admin") as admin:
            assert admin.post("/api/v1/tokens/dash-revoked/revoke").status_code == 200
        assert "sign in again" in expect_problem(browser.get("/api/v1/session"), 401)["detail"]


def test_a_pasted_token_signs_in_and_a_wrong_one_is_counted(api: Api) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        signed = browser.post("/api/v1/session", json={"token": api.tokens["read"]})
        assert signed.status_code == 200, signed.text
        assert signed.json()["via"] == "cookie"
        assert browser.get("/api/v1/session").json()["name"] == "dash-read"
    with httpx.Client(base_url=api.url, timeout=30) as browser:
        wrong = browser.post("/api/v1/session", json={"token": "rtmh_0000000000000000_" + "x" * 43})
        expect_problem(wrong, 401)
        assert "set-cookie" not in wrong.headers
        expect_problem(browser.post("/api/v1/session", json={"tokn": "x"}), 422, "token")
    # a bearer caller is told how it is signed in too
    with api.client("write") as client:
        assert client.get("/api/v1/session").json() == {
            "name": "dash-write",
            "scope": "write",
            "via": "bearer",
        }


def test_rtmh_dashboard_prints_a_link_that_works(api: Api, cli_env: dict[str, str]) -> None:
    make_token(api.db_url, "dash-cli", "write")
    env = {**cli_env, "POSTGRES_URL": api.db_url}
    done = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "dashboard", "--token", "dash-cli", "--url", api.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    link = done.stdout.strip()
    assert link.startswith(f"{api.url}/login?code=rtmhc_"), done.stdout
    assert "rtmh_" not in link.replace("rtmhc_", "")  # never the token itself
    with httpx.Client(timeout=30) as browser:
        assert browser.get(link).status_code == 303
        assert browser.get(f"{api.url}/api/v1/session").json()["name"] == "dash-cli"
    missing = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "dashboard", "--token", "nobody"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    assert "no live token named 'nobody'" in missing.stderr


# --- the dashboard's reads ----------------------------------------------------------------------
def _notification(db_url: str, incident: str, channel: str, status: str, n: int) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, "
            "status, attempts, http_status) VALUES (%s, %s, 'open', %s, %s, 1, 200)",
            (incident, channel, f"{incident}:{channel}:{n}", status),
        )


def test_the_notifications_log_is_newest_first_filtered_and_paged(api: Api) -> None:
    incident = insert_incident(api.db_url, window_key="dash-log")
    for n in range(5):
        _notification(api.db_url, incident, "dash-ops", "sent" if n % 2 else "dead", n)
    _notification(api.db_url, incident, "dash-other", "sent", 9)
    with api.client("read") as client:
        seen: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"channel": "dash-ops", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/api/v1/notifications", params=params).json()
            seen += page["items"]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 5
        assert [n["id"] for n in seen] == sorted((n["id"] for n in seen), reverse=True)
        assert {n["incident_title"] for n in seen} == {"error rate on dash-log"}
        assert seen[0]["window_key"] == "dash-log"
        dead = client.get(
            "/api/v1/notifications", params={"status": "dead", "incident_id": incident}
        ).json()["items"]
        assert len(dead) == 3 and {n["status"] for n in dead} == {"dead"}
        expect_problem(client.get("/api/v1/notifications", params={"status": "lost"}), 422)
        expect_problem(
            client.get("/api/v1/notifications", params={"incident_id": "nope"}), 422, "incident_id"
        )
        expect_problem(client.get("/api/v1/notifications", params={"cursor": "zz"}), 422, "cursor")


def test_the_services_table_has_three_series_per_service(api: Api) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for back in (20, 10):  # minutes ago: closed 60-s windows
            start = now - timedelta(minutes=back)
            for metric, value, p95 in (
                ("log_count", 120.0, None),
                ("error_rate", 0.25, None),
                ("http_request_duration_ms", 80.0, 190.0),
            ):
                conn.execute(
                    "INSERT INTO metrics_agg (window_key, metric_type, window_start, "
                    "window_end, value, count, sum, p95, sketch) "
                    "VALUES ('dash-svc', %s, %s, %s, %s, 10, 0, %s, '{}')",
                    (metric, start, start + timedelta(seconds=60), value, p95),
                )
        old = now - timedelta(hours=2)
        conn.execute(
            "INSERT INTO metrics_agg (window_key, metric_type, window_start, window_end, value, "
            "count, sum, sketch) VALUES ('dash-gone', 'log_count', %s, %s, 5, 5, 0, '{}')",
            (old, old + timedelta(seconds=60)),
        )
    with api.client("read") as client:
        body = client.get("/api/v1/metrics/services", params={"since_minutes": 30}).json()
    assert body["latency_metric"] == "http_request_duration_ms"
    services = {s["window_key"]: s for s in body["services"]}
    assert "dash-gone" not in services
    svc = services["dash-svc"]
    assert [round(v, 3) for _, v in svc["logs_per_s"]] == [2.0, 2.0]  # 120 lines / 60 s
    assert [v for _, v in svc["error_rate"]] == [0.25, 0.25]
    assert [v for _, v in svc["latency_p95"]] == [190.0, 190.0]
    first = datetime.fromisoformat(svc["error_rate"][0][0])
    assert first == now - timedelta(minutes=20)
    with api.client("read") as client:
        expect_problem(client.get("/api/v1/metrics/services", params={"since_minutes": 0}), 422)


def test_the_dead_letter_summary_counts(api: Api) -> None:
    with api.client("read") as client:
        before = client.get("/api/v1/dead-letters/summary").json()
    with psycopg.connect(api.db_url, autocommit=True) as conn:
        for n in range(3):
            conn.execute(
                "INSERT INTO dead_letters (topic, kafka_partition, kafka_offset, payload, reason,"
                " created_at) VALUES ('dash-dl', 0, %s, 'x', 'bad', %s)",
                (n, datetime.now(UTC) - timedelta(hours=2 * (n == 2))),
            )
    with api.client("read") as client:
        after = client.get("/api/v1/dead-letters/summary").json()
    assert after["total"] == before["total"] + 3
    assert after["last_hour"] == before["last_hour"] + 2
    assert after["newest_at"] is not None
