"""`rtmh up` as a user runs it: a subprocess on the embedded defaults, stopped every way."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg

from rtmh.embedded.postgres import EmbeddedPostgres

from .ingest_support import wait_for
from .up_support import UpRun


def _query(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    with EmbeddedPostgres(data_dir / "postgres") as pg, psycopg.connect(pg.url) as conn:
        return conn.execute(sql).fetchall()


def test_demo_opens_notifies_and_resolves_then_leaves_nothing(cli_env: dict[str, str]) -> None:
    run = UpRun(cli_env, "--demo", "--duration", "90")
    assert run.finish(150) == 0, run.output()
    out = run.output()
    assert "incident open: high_error_rate on checkout" in out, out
    assert "incident resolved: high_error_rate on checkout" in out, out
    assert "webhook received: open 'high_error_rate on checkout'" in out
    assert "BAD SIGNATURE" not in out and "signature ok" in out
    assert run.survivors(10) == []
    data_dir = Path(cli_env["RTMH_DATA_DIR"])
    rows = _query(
        data_dir,
        "SELECT i.window_key, i.status, n.event, n.status, n.attempts FROM incidents i "
        "JOIN alert_notifications n ON n.incident_id = i.id "
        "WHERE i.source = 'error_rate_monitor' ORDER BY n.id",
    )
    assert {r[0] for r in rows} == {"checkout"}, rows
    assert rows[0][2] == "open" and rows[-1][2] == "resolve"
    assert all(r[3] == "sent" for r in rows), rows
    others = _query(
        data_dir,
        "SELECT count(*) FROM incidents WHERE source = 'error_rate_monitor'"
        " AND window_key <> 'checkout'",
    )
    assert others == [(0,)]


def test_sigint_stops_everything_in_order(cli_env: dict[str, str]) -> None:
    run = UpRun(cli_env, "--demo")
    run.wait_for_line("RTMH is up", 60)
    run.wait_for_children(60)
    worker_log = Path(cli_env["RTMH_DATA_DIR"]) / "logs" / "worker.log"
    wait_for(
        lambda: worker_log.exists() and "assigned " in worker_log.read_text(),
        60,
        "the worker consuming",
    )
    _api_works_with_the_local_token(run, cli_env)
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(60) == 0, run.output()
    out = run.output()
    order = [
        out.index(f"{step} stopped")
        for step in ("demo traffic", "api", "worker", "notifier", "broker", "PostgreSQL")
    ]
    assert order == sorted(order), out
    assert run.survivors(10) == []
    run_dir = Path(cli_env["RTMH_DATA_DIR"]) / "run"
    assert not (run_dir / "api-token").exists() and not (run_dir / "hub.json").exists()


def _api_works_with_the_local_token(run: UpRun, cli_env: dict[str, str]) -> None:
    """`up` prints where its API is and where the local admin token is; both work, and the
    other commands find the running hub's database without POSTGRES_URL."""
    found = re.search(r"API at (http://\S+)/api/v1", run.output())
    assert found, run.output()
    token_file = Path(cli_env["RTMH_DATA_DIR"]) / "run" / "api-token"
    assert f"admin token for this user in {token_file}" in run.output()
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert token not in run.output()
    headers = {"Authorization": f"Bearer {token}"}

    def answers() -> bool:
        try:
            return httpx.get(f"{found.group(1)}/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 60, "the API to answer")
    listed = httpx.get(f"{found.group(1)}/api/v1/tokens", headers=headers, timeout=10)
    assert listed.status_code == 200 and [t["name"] for t in listed.json()] == ["local-admin"]
    made = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "token", "create", "ci", "--scope", "read"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    ci_token = made.stdout.strip()
    assert ci_token.startswith("rtmh_") and "shown once" in made.stderr
    with httpx.Client(base_url=found.group(1), timeout=10) as client:
        reader = {"Authorization": f"Bearer {ci_token}"}
        assert client.get("/api/v1/incidents", headers=reader).status_code == 200
        assert client.post("/api/v1/silences", headers=reader, json={}).status_code == 403


def test_sigkill_of_up_takes_its_children_down(cli_env: dict[str, str]) -> None:
    run = UpRun(cli_env, "--demo")
    run.wait_for_line("RTMH is up", 60)
    run.wait_for_children(60)
    run.proc.kill()
    run.finish(10)
    assert run.survivors(15) == [], "children must notice their parent is gone"
    # and the next `up` starts cleanly on the same data
    again = UpRun(cli_env, "--duration", "5")
    assert again.finish(90) == 0, again.output()
    assert again.survivors(10) == []
