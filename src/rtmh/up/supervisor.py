"""Supervised child processes: restarted with backoff when they die, given up on when they keep
dying, and tied to `up` so they stop when it does (even when it is killed).

"Keep dying" is either of two things: more than MAX_RESTARTS deaths within RESTART_WINDOW_S (a
fast crash loop), or MAX_SAME_EXITS exits in a row with the same code and last error line, however
slowly (a child that needs a minute to reach the message that kills it would otherwise be
restarted forever, and nobody would look at its log).
"""

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

from rtmh.embedded.files import open_private_log, private_dir
from rtmh.embedded.process import child_setup, read_live_pid, stop_process, write_pid_file

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0
MAX_SAME_EXITS = 5
#: a child that ran this long before dying counts as having recovered: its streak starts again
STABLE_RUN_S = 600.0


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
    started_at: float = 0.0
    #: (exit code, last error line) of the last exit, and how many exits in a row matched it
    last_exit: tuple[int, str] | None = None
    same_exits: int = 0

    def start(self) -> None:
        self.started_at = time.monotonic()
        private_dir(self.log_path.parent)
        with open_private_log(self.log_path) as out:
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


def count_exit(child: Child, code: int, error: str, now: float) -> int:
    """Record an exit; returns how many exits in a row were the same (code and error line)."""
    same = child.last_exit == (code, error) and now - child.started_at < STABLE_RUN_S
    child.same_exits = child.same_exits + 1 if same else 1
    child.last_exit = (code, error)
    return child.same_exits


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    def __init__(
        self,
        on_event: Callable[[str], None],
        *,
        first_backoff_s: float = 1.0,
        restart_window_s: float = RESTART_WINDOW_S,
    ):
        self.children: list[Child] = []
        self.on_event = on_event
        self.first_backoff_s = first_backoff_s
        self.restart_window_s = restart_window_s

    def add(self, child: Child) -> None:
        stale = read_live_pid(child.pid_path)
        if stale is not None:
            self.on_event(
                f"stopping a {child.name} left running by an earlier crash (pid {stale.pid})"
            )
            stop_process(stale)
        child.backoff = self.first_backoff_s
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
                self._exited(child, now)
            elif now >= child.next_start:
                child.next_start = 0.0
                child.start()
                self.on_event(f"{child.name} restarted (pid {child.proc.pid})")

    def _exited(self, child: Child, now: float) -> None:
        """A child died: schedule its restart, or raise ChildFailed when it keeps dying."""
        assert child.proc is not None
        code = child.proc.returncode
        error = child.last_error()
        how = describe_exit(code)
        same = count_exit(child, code, error, now)
        child.restarts.append(now)
        while child.restarts and now - child.restarts[0] > self.restart_window_s:
            child.restarts.popleft()
        if same >= MAX_SAME_EXITS:
            raise ChildFailed(
                f"{child.name} exited {same} times in a row with {how}; last error: {error} "
                f"(full log: {child.log_path})"
            )
        if len(child.restarts) > MAX_RESTARTS:
            raise ChildFailed(
                f"{child.name} died {len(child.restarts)} times in "
                f"{self.restart_window_s:.0f} s; last error: {error} (full log: {child.log_path})"
            )
        if now - child.started_at >= STABLE_RUN_S:
            child.backoff = self.first_backoff_s
        child.next_start = now + child.backoff
        self.on_event(
            f"{child.name} exited with {how}; restarting in {child.backoff:.1f} s "
            f"({error}; log {child.log_path})"
        )
        child.backoff = min(child.backoff * 2, 30.0)

    def stop(self, name: str, timeout: float = 30.0) -> None:
        for child in self.children:
            if child.name == name and child.proc is not None and child.proc.poll() is None:
                stop_process(psutil.Process(child.proc.pid), signal.SIGTERM, timeout)
                child.proc.wait()
                child.pid_path.unlink(missing_ok=True)
