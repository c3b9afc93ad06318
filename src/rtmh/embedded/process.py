"""Child processes that cannot outlive their parent.

Every server RTMH starts (PostgreSQL, the broker, `up`'s children) gets PR_SET_PDEATHSIG, so the
kernel signals it the moment the parent dies, even by SIGKILL; a pid file lets the next run find
and stop anything an older crash left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from rtmh.embedded.files import private_dir

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(sig: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def child_setup(
    death_signal: int = signal.SIGTERM, uid: int | None = None, gid: int | None = None
) -> Callable[[], None]:
    """A preexec_fn: drop to uid/gid first (a credential change clears the death signal),
    then ask for ``death_signal`` when the parent exits, and cover the race where the parent
    died before prctl took effect."""
    parent = os.getpid()

    def setup() -> None:
        if gid is not None:
            os.setgid(gid)
            os.setgroups([])
        if uid is not None:
            os.setuid(uid)
        _set_parent_death_signal(death_signal)
        if os.getppid() != parent:
            os.kill(os.getpid(), death_signal)

    return setup


def free_port(preferred: int | None = None, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, else a port the kernel picks."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # servers set SO_REUSEADDR too: a port whose old connections sit in TIME_WAIT
            # after a restart is still theirs to take
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError("no free TCP port on loopback")


def wait_for_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"process exited before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def stop_process(proc: psutil.Process, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Signal, wait, then SIGKILL what is still there (children included)."""
    try:
        children = proc.children(recursive=True)
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        return
    _, alive = psutil.wait_procs([proc], timeout=timeout)
    for p in alive + [c for c in children if c.is_running()]:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive + children, timeout=5)


def write_pid_file(path: Path, pid: int) -> None:
    private_dir(path.parent)
    path.write_text(f"{pid}\n{psutil.Process(pid).create_time()}\n")


def read_live_pid(path: Path) -> psutil.Process | None:
    """The process a pid file names, only if it is still the same process (pid + start time)."""
    try:
        pid_text, created_text = path.read_text().split()[:2]
        proc = psutil.Process(int(pid_text))
        if abs(proc.create_time() - float(created_text)) > 0.5:
            return None
        return proc
    except (OSError, ValueError, psutil.NoSuchProcess):
        return None
