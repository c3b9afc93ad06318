"""`rtmh bench soak --short` (issue 16): the real hub (two workers, a notifier, the embedded
broker with its log bound, an embedded PostgreSQL) under every kind of fault: workers and the
notifier SIGKILLed, PostgreSQL restarted, the webhook receiver failing. Every end check must
hold; the hour-long run's figures are in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rtmh.bench.soak.model import FAULTS, ROLES


def test_every_promise_holds_through_every_kind_of_fault(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    # no POSTGRES_URL: the bench's own embedded PostgreSQL, which it can restart
    env = {**cli_env, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "bench", "soak", "--short", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(out.read_text())
    checks = result["checks"]
    assert result["passed"], checks
    assert checks["exactly_once"] and checks["good_sent"] > 10_000, checks
    assert checks["good_missing"] == checks["good_duplicates"] == 0
    assert checks["dead_letters_ok"] and checks["bad_sent"] > 50, checks
    assert checks["windows_ok"] and checks["windows_compared"] > 100, checks
    assert checks["alerts_ok"] and checks["bursts"] >= 3, checks
    assert checks["notifications_ok"] and checks["incidents"] >= 3, checks
    assert result["skipped"] == []
    assert all(result["faults_by_kind"][kind] >= 1 for kind in FAULTS), result["faults"]
    memory = result["memory"]
    assert len(memory) >= 8
    assert all(memory[-1]["mb"][role] for role in ROLES), memory[-1]
    assert result["figures"]["broker"]["max_mb"] > 0
    assert Path(result["plot"]) == out.with_suffix(".png")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert "every good message once in raw_events" in done.stdout
    assert "MISSED" not in done.stdout.split("memory (MB)")[0]
