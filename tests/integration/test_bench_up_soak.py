"""`rtmh bench up-soak`, short (issue 21): `rtmh up --demo` on its embedded broker with a low log
bound, so it rolls every few seconds. Memory stays flat and every delivered message is stored
once; the hour-long run and its CPU and lag figures are `rtmh bench up-soak` itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rtmh.embedded.postgres import EmbeddedPostgres

# an unbounded log grew ~170 MB per 10 minutes at the demo's rate (issue 21); a bounded one is
# flat up to the noise of a 45-s fit
MAX_SLOPE_MB_PER_10_MIN = 60.0
MAX_RSS_MB = 150.0


def test_a_bounded_broker_stays_flat_and_loses_nothing(
    pg_server: EmbeddedPostgres, cli_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    env = {**cli_env, "POSTGRES_URL": pg_server.admin_url(), "COLUMNS": "200"}
    args = ["up-soak", "--minutes", "1.5", "--sample-seconds", "5", "--max-batches", "100"]
    done = subprocess.run(
        [sys.executable, "-m", "rtmh.cli", "bench", *args, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert figures["exactly_once"], figures
    assert figures["delivered"] > 0 and figures["failed"] == 0
    assert figures["rolls"] >= 1, figures
    assert figures["broker_rss_max_mb"] < MAX_RSS_MB, figures
    assert figures["broker_rss_slope_mb_per_10_min"] < MAX_SLOPE_MB_PER_10_MIN, figures
    assert "rtmh bench up-soak" in done.stdout
