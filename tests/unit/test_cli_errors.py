"""Commands pointed at a PostgreSQL that is not there, or given a bad setting: one line that
says what to fix, no password in it. Nothing listens on port 1 and 256.1.1.1 is no address, so
these need no server."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from rtmh.notify.cli import run_notify_test


def rtmh(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rtmh.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def shell(script: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "url",
    ["postgresql://rtuser:rtpass@127.0.0.1:1/rt_monitoring", "postgresql://nobody@256.1.1.1/x"],
)
def test_unreachable_server_is_one_line(url: str, cli_env: dict[str, str], repo_root: Path) -> None:
    env = {**cli_env, "POSTGRES_URL": url, "PGCONNECT_TIMEOUT": "2"}
    for result in (rtmh(env, "migrate"), shell(repo_root / "infra/migrate.sh", env, "--test")):
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert "cannot connect to PostgreSQL" in lines[0]
        assert "rtpass" not in lines[0]


def test_bad_setting_stops_with_one_line_naming_it(cli_env: dict[str, str]) -> None:
    result = rtmh({**cli_env, "RTMH_PARTITIONS": "zero"}, "migrate", "--test")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: invalid setting RTMH_PARTITIONS='zero': Input should be a valid integer, "
        "unable to parse string as an integer"
    ]
    result = rtmh({**cli_env, "POSTGRES_URL": "mysql://db"}, "migrate")
    assert result.returncode == 2
    assert "POSTGRES_URL" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_up_with_an_unreachable_postgres_is_one_line(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "POSTGRES_URL": "postgresql://rtuser:rtpass@127.0.0.1:1/rt_monitoring"}
    result = rtmh(env, "up")
    assert result.returncode == 1
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in lines[0]
    assert "POSTGRES_URL" in lines[0]


def test_notify_test_reports_an_unreachable_database() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, color_system=None)
    outcome = run_notify_test("postgresql://u:s3cretpw@127.0.0.1:1/db", "demo", console=console)
    assert outcome.exit_code == 1
    assert "cannot connect to PostgreSQL" in buffer.getvalue()
    assert "s3cretpw" not in buffer.getvalue()
