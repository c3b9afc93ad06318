"""`rtmh up` as a user runs it: a subprocess on the embedded defaults, stopped every way."""

from __future__ import annotations

import signal
from pathlib import Path

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
    run.proc.send_signal(signal.SIGINT)
    assert run.finish(60) == 0, run.output()
    out = run.output()
    order = [
        out.index(f"{step} stopped")
        for step in ("demo traffic", "worker", "notifier", "broker", "PostgreSQL")
    ]
    assert order == sorted(order), out
    assert run.survivors(10) == []


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
