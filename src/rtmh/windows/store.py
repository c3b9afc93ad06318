"""Stage 2's repository: a batch's window partials merged into metrics_agg, inside the ingest
checkpoint's transaction (the SQL is in db/queries/windows.sql).

Two round trips of rows whatever the batch's size: the partials' plain columns are staged with
COPY into a temp table and upserted in one statement, which locks each window row and returns
the metric windows' stored sketches; the merged sketches go back the same way, with their
percentiles, in one UPDATE. The sketch merge itself is pure (``merged_sketch_rows``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psycopg

from rtmh.db.queries import load
from rtmh.windows.partials import Partial, PartialKey, percentiles_of
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
)
#: columns of window_sketch_stage, in merged_sketch_rows order (as in copy_sketch_stage)
SKETCH_STAGE_COLUMNS = ("window_key", "metric_type", "window_start", "p50", "p95", "p99", "sketch")

StageRow = tuple[str, str, int, int, int, float, float | None, float | None]
#: what merge_stage returns for a metric window: its key, merged min and max, and the sketch
#: stored before this batch (JSON text; None for a new row)
StoredSketch = tuple[str, str, int, float | None, float | None, str | None]
SketchRow = tuple[str, str, int, float | None, float | None, float | None, str]


def partial_rows(partials: Mapping[PartialKey, Partial] | Iterable[Partial]) -> list[StageRow]:
    """Rows for COPY into window_partials_stage, columns as in STAGE_COLUMNS."""
    values = partials.values() if isinstance(partials, Mapping) else partials
    return [
        (p.window_key, p.metric_type, p.window_start, p.window_end, p.count, p.sum, p.min, p.max)
        for p in values
    ]


def merged_sketch_rows(
    partials: Mapping[PartialKey, Partial], stored: Iterable[StoredSketch]
) -> list[SketchRow]:
    """Each stored window's sketch with the batch's partial sketch added, and the percentiles
    of the result clamped to the window's merged [min, max]: rows for window_sketch_stage.

    Windows the batch has no sketch for are left out (their stored sketch stays as it is).
    The partials are not changed, so a checkpoint that is retried merges them again from the
    stored state.
    """
    rows: list[SketchRow] = []
    for window_key, metric_type, start, low, high, text in stored:
        part = partials.get((window_key, metric_type, start))
        if part is None or part.sketch is None:
            continue
        if text is None:
            sketch = part.sketch
        else:
            sketch = Sketch.from_json(text)
            sketch.merge(part.sketch)
        rows.append(
            (window_key, metric_type, start, *percentiles_of(sketch, low, high), sketch.to_json())
        )
    return rows


def merge_partials(conn: psycopg.Connection, partials: Mapping[PartialKey, Partial]) -> None:
    """Stage, upsert, merge the sketches; must run inside the caller's transaction."""
    if not partials:
        return
    with conn.cursor() as cur:
        cur.execute(SQL.create_stage)
        with cur.copy(SQL.copy_stage) as copy:
            for row in partial_rows(partials):
                copy.write_row(row)
        cur.execute(SQL.merge_stage)
        stored: list[StoredSketch] = cur.fetchall()
        cur.execute(SQL.empty_stage)
        sketches = merged_sketch_rows(partials, stored)
        if not sketches:
            return
        cur.execute(SQL.create_sketch_stage)
        with cur.copy(SQL.copy_sketch_stage) as copy:
            for sketch_row in sketches:
                copy.write_row(sketch_row)
        cur.execute(SQL.update_sketches)
        cur.execute(SQL.empty_sketch_stage)
