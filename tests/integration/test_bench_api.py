"""`rtmh bench api` end to end in its short mode, on the session's PostgreSQL: a small data set,
a real `rtmh api`, two seconds of each request. Checks the JSON's structure, that every request
type was answered without an error, and that the bench's databases are gone afterwards; no
timing assertions (speed is measured, not asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from rtmh.bench.api_load import KINDS
from rtmh.embedded.postgres import EmbeddedPostgres


def test_bench_api_answers_every_request_type_and_writes_its_figures(
    pg_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    out = tmp_path / "api.json"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    # a wide console: rich wraps table cells to 80 columns without a terminal
    env.update(POSTGRES_URL=pg_server.admin_url(), COLUMNS="200")
    args = ["bench", "api", "--events", "20000", "--windows", "20000", "--incidents", "200"]
    args += ["--clients", "4", "--seconds", "2", "--warmup", "0.5", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rtmh bench api" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())

    assert result["benchmark"] == "api"
    workload = result["workload"]
    assert workload["raw_events"] == 20000
    assert workload["metrics_agg"] >= 20000
    assert workload["incidents"] == 200 and workload["incident_events"] > 200
    assert workload["alert_notifications"] >= 200
    assert workload["services"] == 50 and workload["clients"] == 4
    assert set(workload["generation_s"]) == {
        "raw_events",
        "metrics_agg",
        "incidents",
        "vacuum_analyze",
    }
    for key in ("cpu_model", "cpu_logical_cores", "ram_gb", "python"):
        assert result["machine"][key], key
    assert len(result["load_average"]["before"]) == 3

    assert set(result["requests"]) == set(KINDS)
    for kind, figures in result["requests"].items():
        assert figures["requests"] > 0, kind
        assert figures["errors"] == {}, (kind, figures["errors"])
        assert figures["requests_per_s"] > 0, kind
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["max_ms"]
        assert isinstance(figures["met"], bool)
        # the API's own histogram saw the same requests (plus the warm-up's, scraped before)
        assert figures["server"]["count"] == figures["requests"], kind
        assert figures["single_client"]["requests"] > 0, kind
        assert figures["direct"]["calls"] > 0, kind
        assert any("plan" in step for step in figures["direct"]["slowest_call_plans"]), kind
    # the requests found data: an events search by service and level=error over the last hour
    # finds errors (1 in 100 of ~3,300 rows an hour), a 6-h series has every window start
    assert result["requests"]["events_search"]["mean_items"] > 0
    assert result["requests"]["metric_series"]["mean_items"] > 1
    assert result["requests"]["incident_list"]["mean_items"] > 0

    with psycopg.connect(pg_server.admin_url()) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'rtmh_bench_%'"
        ).fetchall()
    assert left == [], "the bench drops the databases it made"
