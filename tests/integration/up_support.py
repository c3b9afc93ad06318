"""`rtmh up` run as a user runs it, in the background, for the tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time

import psutil

from .ingest_support import wait_for

ROLES = ("postgres", "broker", "worker", "notifier", "api")


def _role(name: str, cmdline: list[str]) -> str | None:
    if "rtmh.cli" in cmdline[:-1]:
        command = cmdline[cmdline.index("rtmh.cli") + 1]
        return command if command in ROLES else None
    if name == "postgres":
        return "postgres"
    return "broker" if name == "tansu" else None


class UpRun:
    """`rtmh up` in the background, remembering every process it ever started."""

    def __init__(self, env: dict[str, str], *args: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "rtmh.cli", "up", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.descendants: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    def finish(self, timeout: float) -> int:
        """Wait for `up` to exit and for its output to be read to the end."""
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def _watch(self) -> None:
        parent = psutil.Process(self.proc.pid)
        while self.proc.poll() is None:
            try:
                self.descendants |= {p.pid for p in parent.children(recursive=True)}
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, fragment: str, timeout: float) -> None:
        wait_for(lambda: fragment in self.output(), timeout, f"{fragment!r} in up's output")

    def roles(self) -> set[str]:
        """What `up`'s live children are (worker, notifier, api, postgres, broker); each one seen is
        remembered among the descendants too, so survivors() checks it."""
        found: set[str] = set()
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    role = _role(child.name(), child.cmdline())
                    self.descendants.add(child.pid)
                    if role is not None:
                        found.add(role)
        return found

    def wait_for_children(self, timeout: float) -> None:
        """Until every child `up` starts is running."""
        wait_for(lambda: self.roles() >= set(ROLES), timeout, f"up's children {ROLES}")

    def survivors(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            running = [p for p in self.descendants if alive(p)]
            if not running or time.monotonic() > deadline:
                return running
            time.sleep(0.2)


def alive(pid: int) -> bool:
    """Running and not a zombie. A process may exit between any two questions about it (the
    children are exiting while we look): one that is gone is not alive."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
