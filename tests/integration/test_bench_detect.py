"""`rtmh bench detect` end to end, small: 3 bursts at a low rate on the session's servers.

Checks the JSON's structure and that every burst became an incident; no timing assertions (the
figures depend on the machine). The background has no errors here, so no thin-window incident
can open on a service just before its burst and hide it: detection is deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import typer
from typer.testing import CliRunner

from rtmh.bench.detect import register
from rtmh.embedded.postgres import EmbeddedPostgres

STAGES = (
    "first_error_to_commit",
    "trigger_to_commit",
    "first_error_to_trigger",
    "trigger_to_ingest_txn",
    "ingest_txn_to_evaluation",
    "evaluation_to_incident_txn",
    "incident_txn_to_commit",
)


def _app() -> typer.Typer:
    app = typer.Typer()
    bench = typer.Typer()
    register(bench)
    app.add_typer(bench, name="bench")
    return app


def test_bench_detect_detects_every_burst_and_writes_its_figures(
    pg_server: EmbeddedPostgres, broker: str, tmp_path: Path
) -> None:
    out = tmp_path / "detect.json"
    env = {
        "POSTGRES_URL": pg_server.admin_url(),
        "KAFKA_BOOTSTRAP_SERVERS": broker,
        "RTMH_TOPIC_PREFIX": None,
        "RTMH_WINDOW_SIZE_S": None,
        "RTMH_WINDOW_SLIDE_S": None,
        "RTMH_BATCH_MAX_MS": None,
        # rich wraps table cells to the terminal width (80 without a terminal), and how it
        # wraps depends on the figures: a wide console keeps the row labels whole
        "COLUMNS": "200",
    }
    args = ["bench", "detect", "--bursts", "3", "--rate", "1000", "--services", "3"]
    args += ["--base-errors", "0", "--json", str(out)]
    result = CliRunner().invoke(_app(), args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "condition true -> incident committed" in result.output, result.output

    figures = json.loads(out.read_text())
    assert figures["benchmark"] == "detect"
    assert figures["command"].startswith("rtmh bench detect --bursts 3 --rate 1000")
    for key in ("cpu_model", "cpu_logical_cores", "ram_gb", "python"):
        assert figures["machine"][key], key
    assert figures["postgres"]["version"]
    config = figures["config"]
    assert (config["bursts"], config["services"], config["rate_msgs_per_s"]) == (3, 3, 1000)
    assert config["rule"]["name"] == "high_error_rate"
    assert config["rule"]["threshold"] == 0.05 and config["rule"]["min_count"] == 50

    assert figures["detected"] == 3 and figures["missed"] == [], figures["bursts"]
    assert figures["masked_by_live_incident"] == []
    assert figures["unexpected_opens"] == []
    services = [b["service"] for b in figures["bursts"]]
    assert len(set(services)) == 3, services
    for b in figures["bursts"]:
        assert b["detected"] and b["event_type"] == "opened", b
        # the clocks are ordered: first error <= condition true <= evaluation <= commit
        assert b["first_error_at"] <= b["trigger_at"] <= b["committed_at"], b
        assert b["trigger_ingest_txn_at"] is not None
        assert b["evaluated_at"] <= b["incident_txn_at"] <= b["committed_at"] + 0.001, b
        lines, errors = b["trigger_window"][1:]
        assert lines >= 50 and errors / lines > 0.05, b
        for key in STAGES:
            assert isinstance(b[key], float), (key, b)
    for key in STAGES:
        stats = figures["latency_s"][key]
        assert stats["n"] == 3, (key, stats)
        assert stats["min"] <= stats["p50"] <= stats["p99"] <= stats["max"], (key, stats)
    assert figures["latency_s"]["first_error_to_commit"]["min"] > 0

    background = figures["background"]
    # how fast is the machine's business; that traffic ran and the worker kept up is the bench's
    assert background["produced"] > 0 and background["committed_per_s"] > 0
    assert 0 <= background["max_lag_messages"] <= background["produced"]
    assert "worker" in background["cpu_percent_of_one_core"]
    assert figures["diagnostics"]["ingest_transactions"]["n"] > 0
    target = figures["targets"]["first_error_to_commit_p99_max_s"]
    assert figures["targets_met"] == {
        "first_error_to_commit_p99": figures["latency_s"]["first_error_to_commit"]["p99"] < target,
        "trigger_to_commit_p99": figures["latency_s"]["trigger_to_commit"]["p99"] < target,
    }

    # the benchmark dropped the databases it created
    with psycopg.connect(pg_server.admin_url()) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'rtmh_bench_%'"
        ).fetchall()
    assert left == []
