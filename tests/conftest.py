"""Shared fixtures: one real PostgreSQL and one real broker per test session.

Each test gets its own database cloned from a migrated template (CREATE DATABASE ... TEMPLATE,
~100 ms) and its own topic prefix on the shared broker, so tests never see each other's data.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtmh.db.databases import create_database, create_template, drop_database
from rtmh.embedded.broker import EmbeddedBroker
from rtmh.embedded.postgres import EmbeddedPostgres, forget_clusters_under
from tests.modes import ancestor_modes

TEMPLATE = "rtmh_template"


@pytest.fixture(scope="session", autouse=True)
def _forget_test_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """As root, clusters live outside the data dir (in /var/lib/rtmh): remove those this
    session's temp dirs made, whoever started them (`rtmh up` subprocesses included)."""
    yield
    if os.geteuid() == 0:
        forget_clusters_under(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def pg_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pg")


@pytest.fixture(scope="session")
def pg_server_ancestor_modes(pg_root: Path) -> dict[Path, str]:
    """The directories on the way to pg_server's data dir, as they were before it started."""
    return ancestor_modes(pg_root)


@pytest.fixture(scope="session")
def pg_server(
    pg_root: Path, pg_server_ancestor_modes: dict[Path, str]
) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(pg_root, fast_unsafe=True, ephemeral=True)
    server.start()
    create_template(server.admin_url(), TEMPLATE)
    yield server
    server.stop()


def new_test_database(server: EmbeddedPostgres, template: str | None) -> str:
    """A new database of this test's own (a clone of ``template`` when given); its name."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    create_database(server.admin_url(), name, template=template)
    return name


def drop_test_database(server: EmbeddedPostgres, name: str) -> None:
    drop_database(server.admin_url(), name)


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database with every migration applied."""
    name = new_test_database(pg_server, TEMPLATE)
    yield pg_server.admin_url(name)
    drop_test_database(pg_server, name)


@pytest.fixture(scope="module")
def module_db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A migrated database shared by one test module (e.g. with one API server over it)."""
    name = new_test_database(pg_server, TEMPLATE)
    yield pg_server.admin_url(name)
    drop_test_database(pg_server, name)


@pytest.fixture
def empty_db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database with nothing in it (for the migrators)."""
    name = new_test_database(pg_server, None)
    yield pg_server.admin_url(name)
    drop_test_database(pg_server, name)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedBroker(tmp_path_factory.mktemp("broker"))
    bootstrap = server.start()
    yield bootstrap
    server.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix of this test's own, so topics on the shared broker never collide."""
    return f"t{uuid.uuid4().hex[:8]}."


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running `rtmh` as a subprocess, isolated from the user's settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    env["RTMH_DATA_DIR"] = str(tmp_path / "data")
    # `rtmh up` serves the API: on any free port, so a test never fights another for 8080
    env["RTMH_API_PORT"] = "0"
    return env


@pytest.fixture
def reachable_home() -> Iterator[Path]:
    """A place for a server home of the test's own, reachable by the server account: made by
    the test (in /tmp, which everyone may enter), so opening it up is allowed."""
    path = Path(tempfile.mkdtemp(prefix="rtmh-test-home-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path / "home"
    finally:
        shutil.rmtree(path)
