"""The embedded servers start for real and leave nothing behind, whatever happens to the parent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from rtmh.embedded.postgres import EmbeddedPostgres

from .up_support import alive

PARENT = """
import json, sys, time, pathlib
from rtmh.embedded.postgres import EmbeddedPostgres
from rtmh.embedded.broker import EmbeddedBroker
root = pathlib.Path(sys.argv[1])
pg = EmbeddedPostgres(root / "pg", fast_unsafe=True)
pg.start()
broker = EmbeddedBroker(root / "run")
broker.start()
print(json.dumps({"pg": pg.proc.pid, "broker": broker.proc.pid, "url": pg.url}), flush=True)
try:
    time.sleep(600)
finally:
    broker.stop()
    pg.stop()
"""


def _start_parent(root: Path) -> tuple[subprocess.Popen[str], dict[str, object]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    info = json.loads(proc.stdout.readline())
    return proc, info


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _server_family(pid: int) -> list[int]:
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children(recursive=True))]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_no_process_outlives_its_parent(tmp_path: Path, how: signal.Signals) -> None:
    proc, info = _start_parent(tmp_path)
    pids = [*_server_family(int(info["pg"])), int(info["broker"])]  # type: ignore[call-overload]
    with psycopg.connect(str(info["url"])) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    proc.send_signal(how)
    proc.wait(timeout=30)
    assert _gone(pids, 15), [p for p in pids if alive(p)]


def test_restart_after_crash_reuses_data(tmp_path: Path) -> None:
    proc, info = _start_parent(tmp_path)
    with psycopg.connect(str(info["url"]), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (v int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    proc.kill()
    proc.wait()
    assert _gone([int(info["pg"])], 15)  # type: ignore[call-overload]
    with EmbeddedPostgres(tmp_path / "pg") as again, psycopg.connect(again.url) as conn:
        assert conn.execute("SELECT v FROM kept").fetchone() == (42,)


def test_data_dir_in_use_is_refused(tmp_path: Path) -> None:
    proc, _ = _start_parent(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="in use by process"):
            EmbeddedPostgres(tmp_path / "pg").start()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize("immediate", [False, True], ids=["fast", "immediate"])
def test_a_restart_keeps_the_data_and_the_port(tmp_path: Path, immediate: bool) -> None:
    """`rtmh bench soak` restarts PostgreSQL under running workers: they must find it where
    they left it, with every committed row (after crash recovery when stopped as a crash)."""
    with EmbeddedPostgres(tmp_path / "pg", ephemeral=True) as pg:
        assert pg.proc is not None
        before_pid, port = pg.proc.pid, pg.port
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (1), (2)")
        pg.restart(immediate=immediate)
        assert pg.proc is not None and pg.proc.pid != before_pid
        assert pg.port == port
        with psycopg.connect(pg.url) as conn:
            assert conn.execute("SELECT sum(n) FROM kept").fetchone() == (3,)
        log = (tmp_path / "pg" / "postgres.log").read_text()
        # an immediate stop is a crash to PostgreSQL: it replays its WAL at start
        assert ("automatic recovery in progress" in log) == immediate
