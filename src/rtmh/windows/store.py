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


def merge_partials(conn: psycopg.Connection, partials: dict[PartialKey, Partial]) -> None:
    """Stage and upsert; must run inside the caller's transaction (the stage empties at commit)."""
    if not partials:
        return
    with conn.cursor() as cur:
        cur.execute(STAGE_TABLE_SQL)
        with cur.copy(COPY_STAGE_SQL) as copy:
            for row in partial_rows(partials):
                copy.write_row(row)
        cur.execute(MERGE_PARTIALS_SQL)
