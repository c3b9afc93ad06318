"""Apply the SQL files in ``rtmh/db/migrations`` in alphabetical order, each in its own transaction.

Shares the ``schema_migrations`` table (version, checksum, applied_at) and the advisory lock key
with ``infra/migrate.sh`` and ``infra/migrate-docker.sh``, so any of the three can be used on the
same database. The checksum is the SHA-256 of the file's bytes, as ``sha256sum`` prints it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import psycopg

from rtmh.db.queries import load

# Same number in infra/lib/migrate-common.sh: two runs of any migrator never apply concurrently.
MIGRATION_LOCK_KEY = 7_245_610_001

SQL = load("migrate")


class MigrationError(Exception):
    """A migration cannot be applied; the message says which file and what to do."""


@dataclass(frozen=True, slots=True)
class MigrationFile:
    version: str  # the file name, e.g. 001_initial_schema.sql
    sql: bytes

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    version: str
    state: str  # applied | pending | changed | missing-file
    applied_at: datetime | None


def migrations_dir() -> Path:
    return Path(str(resources.files("rtmh.db") / "migrations"))


def load_files(directory: Path | None = None) -> list[MigrationFile]:
    folder = directory or migrations_dir()
    return [MigrationFile(p.name, p.read_bytes()) for p in sorted(folder.glob("*.sql"))]


def _applied(conn: psycopg.Connection) -> dict[str, tuple[str, datetime]]:
    row = conn.execute(SQL.schema_migrations_exists).fetchone()
    if row is None or not row[0]:
        return {}
    rows = conn.execute(SQL.applied_migrations).fetchall()
    return {version: (checksum, applied_at) for version, checksum, applied_at in rows}


def status(conn: psycopg.Connection, files: list[MigrationFile]) -> list[MigrationStatus]:
    """Read-only: never creates schema_migrations."""
    applied = _applied(conn)
    out: list[MigrationStatus] = []
    for f in files:
        if f.version not in applied:
            out.append(MigrationStatus(f.version, "pending", None))
            continue
        checksum, at = applied[f.version]
        state = "applied" if checksum == f.checksum else "changed"
        out.append(MigrationStatus(f.version, state, at))
    known = {f.version for f in files}
    for version, (_, at) in sorted(applied.items()):
        if version not in known:
            out.append(MigrationStatus(version, "missing-file", at))
    return out


def check_checksums(conn: psycopg.Connection, files: list[MigrationFile]) -> None:
    changed = [s.version for s in status(conn, files) if s.state == "changed"]
    if changed:
        raise MigrationError(
            f"migration {changed[0]} was changed after it was applied (checksum differs from "
            "schema_migrations): restore the original file and put the change in a new migration"
        )


def _apply_one(conn: psycopg.Connection, f: MigrationFile) -> bool:
    """True when applied now, False when another run applied it first."""
    with conn.transaction():
        conn.execute(SQL.lock_migrations, (MIGRATION_LOCK_KEY,))
        row = conn.execute(SQL.applied_checksum, (f.version,)).fetchone()
        if row is not None:
            if row[0] != f.checksum:
                raise MigrationError(f"migration {f.version} was changed after it was applied")
            return False
        try:
            # no parameters: psycopg sends the whole file with the simple query protocol
            conn.execute(f.sql.decode("utf-8"))
        except psycopg.Error as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MigrationError(
                f"migration {f.version} failed and was rolled back: {first}"
            ) from err
        conn.execute(SQL.record_migration, (f.version, f.checksum))
    return True


def apply_pending(
    conn: psycopg.Connection,
    files: list[MigrationFile] | None = None,
    progress: Callable[[str, bool], None] | None = None,
) -> list[str]:
    """Apply what is pending; returns the versions applied by this run."""
    todo = files if files is not None else load_files()
    conn.autocommit = True
    with conn.transaction():
        conn.execute(SQL.lock_migrations, (MIGRATION_LOCK_KEY,))
        conn.execute(SQL.create_schema_migrations)
    check_checksums(conn, todo)
    done: list[str] = []
    for f in todo:
        applied_now = _apply_one(conn, f)
        if applied_now:
            done.append(f.version)
        if progress is not None:
            progress(f.version, applied_now)
    return done
