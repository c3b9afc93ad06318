"""Each stage's SQL as named queries: ``db/queries/<stage>.sql``, loaded once.

A file is a list of queries, each introduced by a line ``-- name: <query_name>``; comments
between that line and the next one stay with the query (PostgreSQL ignores them), so each query
keeps the why next to it. Everything before the first name is the file's own header. Queries are
parameterised (``%s`` / ``%(name)s``); nothing in them comes from user strings.

    from rtmh.db.queries import load
    SQL = load("ingest")
    conn.execute(SQL.lock_offsets, (...))
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from typing import LiteralString, cast

_NAME = re.compile(r"^-- name: ([a-z_][a-z0-9_]*)[ \t]*$", re.MULTILINE)


class Queries:
    """One stage's queries, by name, as attributes; an unknown name raises AttributeError
    naming the file."""

    def __init__(self, stage: str, queries: dict[str, LiteralString]) -> None:
        self._stage = stage
        self._queries = queries

    def __getattr__(self, name: str) -> LiteralString:
        try:
            return self._queries[name]
        except KeyError:
            raise AttributeError(
                f"no query named {name!r} in db/queries/{self._stage}.sql"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._queries)


def parse(stage: str, text: str) -> dict[str, LiteralString]:
    """The named queries of one file's text. Raises ValueError on a name given twice or a
    query without text."""
    parts = _NAME.split(text)
    found: dict[str, LiteralString] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise ValueError(f"db/queries/{stage}.sql: query {name!r} is defined twice")
        sql = body.strip()
        if not sql:
            raise ValueError(f"db/queries/{stage}.sql: query {name!r} has no text")
        # read from the package's own files, never from input: as literal as a literal
        found[name] = cast(LiteralString, sql)
    return found


@functools.cache
def load(stage: str) -> Queries:
    text = resources.files("rtmh.db").joinpath("queries", f"{stage}.sql").read_text("utf-8")
    return Queries(stage, parse(stage, text))
