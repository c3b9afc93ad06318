"""Shared fixtures: one real PostgreSQL and one real broker per test session.

Each test gets its own database cloned from a migrated template (CREATE DATABASE ... TEMPLATE,
~100 ms) and its own topic prefix on the shared broker, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from rtmh.db.migrate import apply_pending
from rtmh.embedded.broker import EmbeddedBroker
from rtmh.embedded.postgres import EmbeddedPostgres

TEMPLATE = "rtmh_template"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), fast_unsafe=True)
    server.start()
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(server.admin_url(TEMPLATE), autocommit=True) as conn:
        apply_pending(conn)
    yield server
    server.stop()


def _create_database(server: EmbeddedPostgres, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        suffix = f" TEMPLATE {template}" if template else ""
        conn.execute(f"CREATE DATABASE {name}{suffix}")
    return name


def _drop_database(server: EmbeddedPostgres, name: str) -> None:
    with psycopg.connect(server.admin_url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database with every migration applied."""
    name = _create_database(pg_server, TEMPLATE)
    yield pg_server.admin_url(name)
    _drop_database(pg_server, name)


@pytest.fixture
def empty_db_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh database with nothing in it (for the migrators)."""
    name = _create_database(pg_server, None)
    yield pg_server.admin_url(name)
    _drop_database(pg_server, name)


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
    return env
