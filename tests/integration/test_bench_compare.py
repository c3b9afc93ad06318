"""`rtmh bench compare --short` end to end: RTMH (worker, notifier, webhook) and the real
Prometheus + Alertmanager binaries (tight profile) fed by one traffic run, 2 bursts.

Checks the JSON's shape, that RTMH and Prometheus detected every burst, and that nothing the
bench started is left running. No timing assertions: the figures are the machine's business.
The background has no errors (as in bench detect's test): no thin-window incident can open on
a service just before its burst and hide it, so detection is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
import typer
from typer.testing import CliRunner

from rtmh.bench.compare import register
from rtmh.bench.compare.peer import find_binaries
from rtmh.embedded.postgres import EmbeddedPostgres


@pytest.fixture(autouse=True)
def _peer_installed() -> None:
    """The peer is real or the test fails saying how to get it (a skip would let a CI machine
    without it pass unnoticed)."""
    assert find_binaries() is not None, (
        "needs Debian's prometheus and prometheus-alertmanager: "
        "apt-get install -y prometheus prometheus-alertmanager (.ci/run installs them)"
    )


def _app() -> typer.Typer:
    app = typer.Typer()
    bench = typer.Typer()
    register(bench)
    app.add_typer(bench, name="bench")
    return app


def _peers_running() -> list[int]:
    mine = psutil.Process().children(recursive=True)
    return [p.pid for p in mine if p.name().startswith(("prometheus", "alertmanager"))]


def test_bench_compare_short_detects_every_burst_on_both_systems(
    pg_server: EmbeddedPostgres, broker: str, tmp_path: Path
) -> None:
    out = tmp_path / "compare.json"
    env = {
        "POSTGRES_URL": pg_server.admin_url(),
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "RTMH_TOPIC_PREFIX": None,
        "RTMH_WINDOW_SIZE_S": None,
        "RTMH_WINDOW_SLIDE_S": None,
        "RTMH_BATCH_MAX_MS": None,
        "COLUMNS": "200",
    }
    args = ["bench", "compare", "--short", "--base-errors", "0", "--json", str(out)]
    result = CliRunner().invoke(_app(), args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "burst start -> webhook received" in result.output, result.output

    figures = json.loads(out.read_text())
    assert figures["benchmark"] == "compare" and figures["skipped"] is None
    assert figures["peer"]["prometheus"] and figures["peer"]["alertmanager"]
    assert list(figures["config"]["profiles"]) == ["tight"]
    rows = {r["system"]: r for r in figures["systems"]}
    assert list(rows) == ["rtmh", "prometheus/tight"]
    for name, row in rows.items():
        assert row["detected"] == 2 and row["missed"] == [], (name, row)
        stats = row["latency_s"]
        assert stats["n"] == 2 and 0 < stats["min"] <= stats["p50"] <= stats["max"], stats
        assert isinstance(row["false_alerts"], int)
    assert len(figures["bursts"]) == 2
    for burst in figures["bursts"]:
        assert set(burst["detection_s"]) == set(rows), burst
        assert burst["ended_at"] > burst["started_at"]
    quiet = figures["quiet"]
    assert quiet["error_sent_at"] is not None and 0 < quiet["log_lines"] < 100, quiet
    assert isinstance(figures["verdicts"], list) and figures["verdicts"]
    assert figures["machine"]["cpu_logical_cores"]
    assert _peers_running() == []
