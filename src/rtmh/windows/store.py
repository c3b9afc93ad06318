"""Stage 2's repository: a batch's window partials merged into metrics_agg, inside the ingest
checkpoint's transaction (the SQL is in db/queries/windows.sql).

The partials are staged with COPY into a temp table and upserted in one statement: one round
trip for the rows, one for the merge, whatever the batch's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

from rtmh.db.queries import load
from rtmh.windows.partials import Partial, PartialKey
from rtmh.windows.sketch import Sketch

SQL = load("windows")

#: columns of window_partials_stage, in partial_rows order (as in the copy_stage query)
STAGE_COLUMNS = (
    "window_key",
    "metric_type",
    "window_start",
    "window_end",
    "count",
    "sum",
    "min",
    "max",
    "p50",
    "p95",
    "p99",
    "sketch",
)

StageRow = tuple[
    str,
    str,
    int,
    int,
    int,
    float,
    float | None,
    float | None,
    float | None,
    float | None,
    float | None,
    str | None,
]


def _sketch_json(sketch: Sketch | None) -> str | None:
    # str, not bytes: psycopg's COPY sends str as text into the jsonb column (bytes -> bytea)
    return None if sketch is None else sketch.to_json()


def partial_rows(partials: Mapping[PartialKey, Partial] | Iterable[Partial]) -> list[StageRow]:
    """Rows for COPY into window_partials_stage, columns as in STAGE_COLUMNS."""
    values = partials.values() if isinstance(partials, Mapping) else partials
    return [
        (
            p.window_key,
            p.metric_type,
            p.window_start,
            p.window_end,
            p.count,
            p.sum,
            p.min,
            p.max,
            *p.percentiles(),
            _sketch_json(p.sketch),
        )
        for p in values
    ]


def merge_partials(conn: psycopg.Connection, partials: Mapping[PartialKey, Partial]) -> None:
    """Stage and upsert; must run inside the caller's transaction."""
    if not partials:
        return
    with conn.cursor() as cur:
        cur.execute(SQL.create_stage)
        with cur.copy(SQL.copy_stage) as copy:
            for row in partial_rows(partials):
                copy.write_row(row)
        cur.execute(SQL.merge_stage)
        cur.execute(SQL.empty_stage)
