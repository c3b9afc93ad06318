"""`rtmh bench notify`, small: the real notifier process, a loopback receiver, figures and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from rtmh.bench.notify import register
from rtmh.embedded.postgres import EmbeddedPostgres


def _bench_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def group() -> None:
        """rtmh bench, as registered by the top-level CLI."""

    register(app)
    return app


def test_bench_notify_measures_every_notification_and_writes_json(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    out = tmp_path / "notify.json"
    result = CliRunner().invoke(
        _bench_app(),
        ["notify", "--count", "30", "--interval-ms", "10", "--json", str(out)],
        env={"POSTGRES_URL": pg_server.admin_url(), "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "rtmh bench notify" in result.output
    figures = json.loads(out.read_text())
    r = figures["results"]
    assert r["received"] == 30 and r["missing"] == 0 and r["duplicates"] == 0
    assert r["bad_signatures"] == 0 and r["statuses"] == {"sent": 30}
    assert r["notifier_exit_code"] == 0
    latency = r["latency_ms"]
    assert latency["count"] == 30 and 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
    assert r["latency_from_commit_sent_ms"]["p50"] >= latency["p50"]
    assert figures["machine"]["cpu_logical_cores"] >= 1 and figures["machine"]["ram_gb"] > 0
    assert figures["targets"] == {"p99_max_ms": 500.0}
    assert figures["targets_met"] == {"p99": latency["p99"] < 500.0}
