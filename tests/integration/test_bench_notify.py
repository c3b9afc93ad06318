"""`rtmh bench notify`, small: the real notifier process, a loopback receiver, figures and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from rtmh.bench.notify import percentile, register, summarise
from rtmh.embedded.postgres import EmbeddedPostgres


def _bench_app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def group() -> None:
        """rtmh bench, as registered by the top-level CLI."""

    register(app)
    return app


def test_percentiles_interpolate_between_ranks() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
    figures = summarise([float(v) for v in range(1, 101)])
    assert figures["p50"] == 50.5 and figures["max"] == 100.0
    assert abs(figures["p99"] - 99.01) < 1e-9


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
    assert isinstance(figures["targets_met"]["p99"], bool)
