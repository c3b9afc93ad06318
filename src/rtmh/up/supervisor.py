"""Supervised child processes: restarted with backoff when they die, given up on when they keep
dying, and tied to `up` so they stop when it does (even when it is killed)."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from rtmh.embedded.process import child_setup, read_live_pid, stop_process, write_pid_file

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0


class ChildFailed(Exception):
    """A child kept dying; the message names it and quotes its last error."""


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    pid_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: deque[float] = field(default_factory=deque)
    next_start: float = 0.0
    backoff: float = 1.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            # SIGTERM when `up` dies: the worker then finishes its batch and commits
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=child_setup(signal.SIGTERM),
            )
        write_pid_file(self.pid_path, self.proc.pid)

    def last_error(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln]
        except OSError:
            return "no log"
        errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln or "error:" in ln]
        return (errors or lines or ["no output"])[-1][-300:]


class Supervisor:
    def __init__(self, on_event: Callable[[str], None]):
        self.children: list[Child] = []
        self.on_event = on_event

    def add(self, child: Child) -> None:
        stale = read_live_pid(child.pid_path)
        if stale is not None:
            self.on_event(
                f"stopping a {child.name} left running by an earlier crash (pid {stale.pid})"
            )
            stop_process(stale)
        child.start()
        self.children.append(child)
        self.on_event(
            f"{child.name} started (pid {child.proc.pid if child.proc else '?'}, "
            f"log {child.log_path})"
        )

    def check(self) -> None:
        """Restart children that died; raise ChildFailed when one keeps dying."""
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.proc.poll() is None:
                continue
            if child.next_start == 0.0:
                code = child.proc.returncode
                child.restarts.append(now)
                while child.restarts and now - child.restarts[0] > RESTART_WINDOW_S:
                    child.restarts.popleft()
                if len(child.restarts) > MAX_RESTARTS:
                    raise ChildFailed(
                        f"{child.name} died {len(child.restarts)} times in "
                        f"{RESTART_WINDOW_S:.0f} s; last error: {child.last_error()} "
                        f"(full log: {child.log_path})"
                    )
                child.next_start = now + child.backoff
                self.on_event(
                    f"{child.name} exited with code {code}; restarting in "
                    f"{child.backoff:.0f} s ({child.last_error()})"
                )
                child.backoff = min(child.backoff * 2, 30.0)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.start()
                self.on_event(f"{child.name} restarted (pid {child.proc.pid})")

    def stop(self, name: str, timeout: float = 30.0) -> None:
        for child in self.children:
            if child.name == name and child.proc is not None and child.proc.poll() is None:
                stop_process(psutil.Process(child.proc.pid), signal.SIGTERM, timeout)
                child.proc.wait()
                child.pid_path.unlink(missing_ok=True)
