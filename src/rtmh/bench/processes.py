"""The RTMH processes a benchmark starts and measures: `rtmh worker` and `rtmh notifier`, each in
a process of its own as in a deployment, with the settings in its environment; and the CPU each
part of a run uses."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

from rtmh.embedded.process import child_setup


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a child's log, for an error message."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ChildProcess:
    """``argv`` with ``env`` (None: this process's), its output in ``log_path``; stopped with
    SIGTERM (then SIGKILL after ``stop_timeout_s``), and with the benchmark however it ends.
    ``name`` says what it is in errors. Usable as a context manager."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        own_session: bool = False,
        stop_timeout_s: float = 20.0,
        tail_lines: int = 30,
    ):
        self.name = name
        self.log_path = log_path
        self.stop_timeout_s = stop_timeout_s
        self.tail_lines = tail_lines
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # a session of its own: Ctrl-C reaches the benchmark, which stops it in order
                start_new_session=own_session,
                preexec_fn=child_setup(signal.SIGTERM),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return log_tail(self.log_path, self.tail_lines)

    def check(self) -> None:
        """Raises RuntimeError, with the log's tail, once the process has exited."""
        if not self.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}; log tail:\n{self.tail()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class RtmhProcess(ChildProcess):
    """``python -m rtmh.cli <command>`` (a worker, a notifier) as a :class:`ChildProcess`."""

    def __init__(
        self,
        command: str,
        env: dict[str, str],
        log_path: Path,
        *,
        own_session: bool = False,
        stop_timeout_s: float = 20.0,
        args: Sequence[str] = (),
    ):
        super().__init__(
            f"the {command}",
            [sys.executable, "-m", "rtmh.cli", command, *args],
            log_path,
            env=env,
            own_session=own_session,
            stop_timeout_s=stop_timeout_s,
        )


class CpuMeter:
    """CPU time of each part of a run over the measured span: the worker, the embedded broker
    and PostgreSQL (children of this process, when embedded) and this process (producer and
    watcher). On a small machine they share the cores, which decides the latencies."""

    def __init__(self, worker_pid: int):
        self.worker_pid = worker_pid
        self.start: dict[str, float] = {}
        self.started = 0.0

    def _parts(self) -> dict[str, list[psutil.Process]]:
        me = psutil.Process()
        parts: dict[str, list[psutil.Process]] = {"benchmark (producer, watcher)": [me]}
        for child in me.children():
            try:
                exe = Path((child.cmdline() or [""])[0]).name
            except psutil.Error:
                continue
            if child.pid == self.worker_pid:
                parts["worker"] = [child]
            elif exe.startswith("tansu"):
                parts["embedded broker"] = [child]
            elif exe == "postgres":
                parts["embedded PostgreSQL"] = [child, *child.children()]
        return parts

    def _snapshot(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, procs in self._parts().items():
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    total += t.user + t.system
                    if name == "embedded PostgreSQL":  # exited backends, reaped by postmaster
                        total += t.children_user + t.children_system
            out[name] = total
        return out

    def begin(self) -> None:
        self.start, self.started = self._snapshot(), time.monotonic()

    def end(self) -> dict[str, float]:
        """Percent of one core per part since ``begin``."""
        if not self.start:
            return {}
        now, span = self._snapshot(), time.monotonic() - self.started
        return {
            name: round((now[name] - self.start.get(name, 0.0)) / span * 100, 1)
            for name in now
            if span > 0
        }
