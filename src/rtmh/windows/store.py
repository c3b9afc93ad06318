"""Merging a batch's window partials into metrics_agg, inside the ingest checkpoint transaction."""

from __future__ import annotations

import psycopg

from rtmh.windows.partials import (
    COPY_STAGE_SQL,
    MERGE_PARTIALS_SQL,
    STAGE_TABLE_SQL,
    Partial,
    PartialKey,
    partial_rows,
)

#: the stage also empties at commit; emptied after each merge too, because the ingest safety net
#: merges several parts of a batch in one transaction and each must merge only its own partials
EMPTY_STAGE_SQL = "DELETE FROM window_partials_stage"


def merge_partials(conn: psycopg.Connection, partials: dict[PartialKey, Partial]) -> None:
    """Stage and upsert; must run inside the caller's transaction."""
    if not partials:
        return
    with conn.cursor() as cur:
        cur.execute(STAGE_TABLE_SQL)
        with cur.copy(COPY_STAGE_SQL) as copy:
            for row in partial_rows(partials):
                copy.write_row(row)
        cur.execute(MERGE_PARTIALS_SQL)
        cur.execute(EMPTY_STAGE_SQL)
