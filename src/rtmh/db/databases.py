"""Whole databases: create one (empty, or cloned from a migrated template), drop one.

The benchmarks (``rtmh.bench.common.Databases``) and the test fixtures share these: each run or
test gets a database of its own, cloned from a template that had every migration applied once
(``CREATE DATABASE ... TEMPLATE``, ~100 ms instead of migrating each one).

    create_template(admin_url, "rtmh_template")
    url = create_database(admin_url, "t_1234", template="rtmh_template")
    ...
    drop_database(admin_url, "t_1234")
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from rtmh.db.migrate import apply_pending
from rtmh.db.queries import load

SQL = load("databases")


def database_url(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def database_name(url: str) -> str:
    """The database a URL points at."""
    return urlsplit(url).path.lstrip("/")


def create_database(admin_url: str, name: str, *, template: str | None = None) -> str:
    """Create database ``name`` (a copy of ``template`` when given) on the server of
    ``admin_url``, which may CREATE DATABASE; returns the new database's URL."""
    if template is None:
        statement = sql.SQL(SQL.create_database).format(name=sql.Identifier(name))
    else:
        statement = sql.SQL(SQL.create_database_from_template).format(
            name=sql.Identifier(name), template=sql.Identifier(template)
        )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)
    return database_url(admin_url, name)


def create_template(admin_url: str, name: str) -> str:
    """Create database ``name`` with every migration applied, to clone others from; returns
    its URL (no connection to it is left open, so it can be copied at once)."""
    url = create_database(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        apply_pending(conn)
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name`` if it exists, disconnecting whoever is still connected."""
    statement = sql.SQL(SQL.drop_database).format(name=sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)
