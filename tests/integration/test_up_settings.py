"""Flags given to `rtmh` before `up` reach the processes `up` starts, and `up`'s own log lines
come out in the format of its other lines.

`rtmh --batch-max-ms 50 --group-id ... up` on the embedded defaults, output piped (as in CI):
the children's environment (/proc/<pid>/environ, what `rtmh worker` reads its settings from)
holds every flag, and the worker consumes as the group the flag named."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .ingest_support import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")

# `up`'s lines when piped: "2026-11-30 15:42:28 text"; Python's default log format would add
# milliseconds ("15:42:28,123 INFO rtmh.kafka.client: ...")
_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (?!\d)")


class _Up:
    """`rtmh <flags> up <args>` in the background, its merged output collected line by line."""

    def __init__(self, env: dict[str, str], flags: list[str], args: list[str]):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmh.cli", *flags, "up", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        return "\n".join(self.lines)

    def child_pid(self, name: str) -> int:
        pattern = re.compile(rf"\b{name} started \(pid (\d+),")
        found: list[int] = []

        def started() -> bool:
            found[:] = [int(m.group(1)) for m in pattern.finditer(self.output())]
            assert found or self.proc.poll() is None, f"up exited:\n{self.output()}"
            return bool(found)

        wait_for(started, 120, f"'{name} started' in up's output:\n{self.output()}")
        return found[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(90)
        self._reader.join(10)
        return code


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


def test_top_level_flags_reach_ups_children_and_logs_share_its_format(
    cli_env: dict[str, str],
) -> None:
    flags = ["--batch-max-ms", "50", "--group-id", "flag-group", "--batch-max-messages", "3000"]
    up = _Up(cli_env, flags, ["--duration", "600"])
    try:
        worker, notifier = up.child_pid("worker"), up.child_pid("notifier")
        for pid in (worker, notifier):
            env = _environ(pid)
            assert env["RTMH_BATCH_MAX_MS"] == "50", env
            assert env["RTMH_GROUP_ID"] == "flag-group"
            assert env["RTMH_BATCH_MAX_MESSAGES"] == "3000"
            assert env["RTMH_DATA_DIR"] == cli_env["RTMH_DATA_DIR"]
            assert env["POSTGRES_URL"].startswith("postgresql://")
        # and the worker acts on what it read
        log = Path(cli_env["RTMH_DATA_DIR"]) / "logs" / "worker.log"
        wait_for(
            lambda: "as group flag-group" in log.read_text(errors="replace"),
            120,
            "the worker consuming as group flag-group",
        )
        wait_for(lambda: "RTMH is up" in up.output(), 120, "'RTMH is up'")
    finally:
        code = up.stop()
    out = up.output()
    assert code == 0, out
    # the hub's own Python logging (topics created on the fresh broker) is one of its lines
    assert re.search(r"^\S+ \S+ rtmh\.kafka\.client: created topics", out, re.M), out
    odd = [line for line in up.lines if line.strip() and not _LINE.match(line)]
    assert odd == [], out
