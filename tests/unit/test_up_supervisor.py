"""The supervisor gives up on a child that keeps exiting the same way, and says where to look.

Real child processes (plain Python one-liners), no servers."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from rtmh.up.supervisor import Child, ChildFailed, Supervisor, count_exit, describe_exit


def _child(tmp_path: Path, code: str) -> Child:
    return Child(
        name="worker",
        argv=[sys.executable, "-c", code],
        env={},
        log_path=tmp_path / "logs" / "worker.log",
        pid_path=tmp_path / "worker.pid",
    )


def _changing_child(tmp_path: Path) -> Child:
    """A child whose last error line differs on every run (it counts its runs in a file)."""
    code = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]);"
        " n = int(p.read_text()) if p.exists() else 0; p.write_text(str(n + 1));"
        " print(f'ERROR attempt {n}'); sys.exit(1)"
    )
    child = _child(tmp_path, code)
    child.argv.append(str(tmp_path / "runs"))
    return child


def _run_until_failed(sup: Supervisor, deaths: int) -> ChildFailed | None:
    """Drive check() until ChildFailed or ``deaths`` exits were seen (a count, not a time)."""
    seen: list[str] = []
    sup.on_event = seen.append
    while sum("exited" in e for e in seen) < deaths:
        try:
            sup.check()
        except ChildFailed as err:
            return err
        time.sleep(0.01)
    return None


def test_the_same_exit_five_times_in_a_row_stops_the_restarts_even_when_slow(
    tmp_path: Path,
) -> None:
    # restart_window_s=0: only the in-a-row rule can stop it (a slow crash loop)
    sup = Supervisor(lambda _: None, first_backoff_s=0.001, restart_window_s=0)
    sup.add(_child(tmp_path, "import sys; print('ERROR rtmh: poisoned by offset 7'); sys.exit(3)"))
    err = _run_until_failed(sup, deaths=20)
    assert err is not None, "restarted forever"
    text = str(err)
    assert "worker exited 5 times in a row with code 3" in text
    assert "poisoned by offset 7" in text
    assert str(tmp_path / "logs" / "worker.log") in text


def test_different_exits_are_not_a_streak(tmp_path: Path) -> None:
    child = _changing_child(tmp_path)
    sup = Supervisor(lambda _: None, first_backoff_s=0.001, restart_window_s=0)
    sup.add(child)
    assert _run_until_failed(sup, deaths=8) is None


def test_a_fast_crash_loop_is_still_caught_by_the_window(tmp_path: Path) -> None:
    child = _changing_child(tmp_path)
    sup = Supervisor(lambda _: None, first_backoff_s=0.001)
    sup.add(child)
    err = _run_until_failed(sup, deaths=20)
    assert err is not None and "died 6 times in 120 s" in str(err)


def test_restart_lines_name_the_exit_and_the_log(tmp_path: Path) -> None:
    events: list[str] = []
    sup = Supervisor(events.append, first_backoff_s=0.001, restart_window_s=0)
    sup.add(_child(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"))
    while not any("exited" in e for e in events):
        sup.check()
        time.sleep(0.01)
    line = next(e for e in events if "exited" in e)
    assert "exited with signal SIGSEGV" in line and str(tmp_path / "logs") in line


def test_a_long_healthy_run_ends_the_streak() -> None:
    child = Child("w", [], {}, Path("/nonexistent/log"), Path("/nonexistent/pid"))
    child.started_at = 0.0
    assert [count_exit(child, 1, "boom", now) for now in (1, 2, 3)] == [1, 2, 3]
    child.started_at = 10.0
    assert count_exit(child, 1, "boom", 10.0 + 3600) == 1


@pytest.mark.parametrize(
    ("code", "text"), [(3, "code 3"), (-11, "signal SIGSEGV"), (-200, "signal 200")]
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_child_logs_are_private(tmp_path: Path) -> None:
    """Logs can quote SQL, and SQL can hold a channel's secret."""
    sup = Supervisor(lambda _: None)
    child = _child(tmp_path, "print('hello')")
    sup.add(child)
    assert child.proc is not None and child.proc.wait(60) == 0
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    assert child.log_path.stat().st_mode & 0o777 == 0o600
