"""The faults of `rtmh bench soak`: the hub's processes (two workers, a notifier) kept running
as a supervisor would, and the loop that kills them, restarts PostgreSQL and makes the webhook
receiver fail, at the times the schedule says."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from rtmh.bench.processes import ChildProcess, log_tail
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.bench.soak.model import (
    FAIL_RECEIVER,
    KILL_NOTIFIER,
    KILL_WORKER,
    RESTART_POSTGRES,
    Fault,
    FaultDone,
)
from rtmh.embedded.postgres import EmbeddedPostgres

#: processes that died on their own more often than this end the run: a crash loop, not a soak
MAX_CRASHES = 5


@dataclass(frozen=True)
class Crash:
    """A process that exited when no fault asked it to."""

    t: float
    name: str
    returncode: int | None
    last_lines: str

    def describe(self) -> str:
        code = self.returncode
        how = (
            f"killed by {signal.Signals(-code).name}"
            if code is not None and code < 0 and -code in signal.Signals._value2member_map_
            else f"exited with {code}"
        )
        return f"{self.name} {how} at {self.t:.0f} s; its log ended: {self.last_lines}"


class Fleet:
    """``worker-1``, ``worker-2`` and ``notifier``, each a ``python -m rtmh.cli`` child with its
    own log (appended to across restarts). A process the chaos loop killed is down, not
    failed. One that dies on its own is a finding: recorded as a :class:`Crash` and started
    again, as a supervisor would, so that one crash does not end an hour's run (the end
    checks then say whether it cost anything); more than MAX_CRASHES end the run."""

    def __init__(self, workdir: Path, envs: dict[str, dict[str, str]], clock: Callable[[], float]):
        self.workdir = workdir
        self.envs = envs
        self.clock = clock
        self.procs: dict[str, ChildProcess] = {}
        self.down: set[str] = set()
        self.crashes: list[Crash] = []
        for name in envs:
            self._start(name)

    def _start(self, name: str) -> None:
        command = "notifier" if name == "notifier" else "worker"
        self.procs[name] = ChildProcess(
            name,
            [sys.executable, "-m", "rtmh.cli", command],
            self.workdir / f"{name}.log",
            env=self.envs[name],
            own_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL: no chance to finish a batch or record a delivery."""
        self.down.add(name)
        proc = self.procs[name].proc
        proc.kill()
        proc.wait()

    def revive(self, name: str) -> None:
        self._start(name)
        self.down.discard(name)

    def check(self) -> None:
        """Records and restarts any process that died on its own."""
        for name, proc in list(self.procs.items()):
            if name in self.down or proc.alive():
                continue
            tail = " | ".join(log_tail(proc.log_path, 3).splitlines())
            self.crashes.append(Crash(round(self.clock(), 1), name, proc.returncode, tail))
            if len(self.crashes) > MAX_CRASHES:
                raise RuntimeError(
                    f"{len(self.crashes)} processes died on their own; the last: "
                    f"{self.crashes[-1].describe()}"
                )
            self._start(name)

    def pid(self, name: str) -> int | None:
        proc = self.procs.get(name)
        return None if proc is None or name in self.down or not proc.alive() else proc.pid

    def log_path(self, name: str) -> Path:
        return self.procs[name].log_path

    def stop(self) -> None:
        """SIGTERM, in the order `rtmh up` stops them: workers finish their batch first."""
        for proc in self.procs.values():
            proc.stop()


class Chaos:
    """Applies each fault at ``started + fault.at`` (monotonic), one at a time, each undone
    (process back, server up, receiver healthy) before the next, until ``end_at``.

    Runs on the main thread, never on a thread of its own: the processes it starts (workers, the
    notifier, PostgreSQL) are told to stop when the thread that started them ends
    (PR_SET_PDEATHSIG is per thread), so they must be the main thread's children. While it
    waits, ``idle()`` runs every quarter second (checks, samples, progress); what it raises
    ends the run, after the fault under way is undone."""

    def __init__(
        self,
        faults: list[Fault],
        fleet: Fleet,
        postgres: EmbeddedPostgres | None,
        receiver: ArrivalReceiver,
        started: float,
        say: Callable[[str], None],
        idle: Callable[[], None],
    ):
        self.faults = faults
        self.fleet = fleet
        self.postgres = postgres
        self.receiver = receiver
        self.started = started
        self.say = say
        self.idle = idle
        self.done: list[FaultDone] = []

    def run(self, end_at: float) -> None:
        for fault in self.faults:
            if self.started + fault.at >= end_at:
                break
            self._wait_until(self.started + fault.at)
            at = time.monotonic() - self.started
            recovered = self._apply(fault)
            self.done.append(FaultDone(round(at, 1), fault.kind, fault.describe(), recovered))
            self.say(f"{at:6.0f} s  {fault.describe()}: back after {recovered:.1f} s")
        self._wait_until(end_at)

    def _wait_until(self, moment: float) -> None:
        while (left := moment - time.monotonic()) > 0:
            self.idle()
            time.sleep(min(0.25, left))

    def _apply(self, fault: Fault) -> float:
        """Applies and undoes ``fault``; seconds from the fault to the hub's part being back."""
        begun = time.monotonic()
        if fault.kind in (KILL_WORKER, KILL_NOTIFIER):
            name = f"worker-{fault.target}" if fault.kind == KILL_WORKER else "notifier"
            self.fleet.kill(name)
            try:
                self._wait_until(begun + fault.hold_s)
            finally:
                self.fleet.revive(name)
        elif fault.kind == RESTART_POSTGRES:
            if self.postgres is None:
                raise RuntimeError("no embedded PostgreSQL to restart")
            self.postgres.restart(immediate=bool(fault.target))
        elif fault.kind == FAIL_RECEIVER:
            self.receiver.failing = True
            try:
                self._wait_until(begun + fault.hold_s)
            finally:
                self.receiver.failing = False
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")
        return round(time.monotonic() - begun, 1)


def postgres_pids(postgres: EmbeddedPostgres | None) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    if postgres is None or postgres.proc is None or postgres.proc.poll() is not None:
        return []
    try:
        main = psutil.Process(postgres.proc.pid)
        return [main.pid, *(c.pid for c in main.children(recursive=True))]
    except psutil.Error:
        return []
