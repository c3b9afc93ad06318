"""The ingest safety net: nothing a message holds may stop ingest.

When PostgreSQL refuses a checkpoint's rows for what they contain (SQLSTATE classes 22 and 23, in
the COPY or in the window merge), the rows are written in parts under savepoints until each
refused message stands alone; those go to dead_letters with the database's words as the reason,
and the rest commit in the same transaction (``store_rows_isolating``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from rtmh.db.queries import load
from rtmh.ingest import metrics
from rtmh.ingest.batch import Partition
from rtmh.ingest.copy_text import Row, raw_events_chunks
from rtmh.records import DecodedRecord, KafkaMessage, Rejected, WindowKey

log = logging.getLogger(__name__)

SQL = load("ingest")

#: the later stages' writes inside the checkpoint (window partials): given the rows being stored,
#: returns the windows it touched. Called once per attempt, so it must only write rows' effects.
InTransaction = Callable[[psycopg.Connection, Sequence[DecodedRecord]], set[WindowKey]]


def is_data_error(err: BaseException) -> bool:
    """Refused for what the rows hold (SQLSTATE class 22 data exception or 23 integrity
    violation), or a row Python could not format; not a lost connection, full disk or deadlock,
    which are retried as they are."""
    if isinstance(err, psycopg.Error):
        return (err.sqlstate or "")[:2] in ("22", "23")
    # UnicodeEncodeError (a lone surrogate from a JSON escape), an unrepresentable time
    return isinstance(err, (ValueError, OverflowError))


_COPY_LINE_RE = re.compile(r"^COPY raw_events, line (\d+)", re.MULTILINE)


def refused_line(err: BaseException) -> int | None:
    """The 0-based row a COPY into raw_events refused, when PostgreSQL named its line."""
    if not isinstance(err, psycopg.Error):
        return None
    match = _COPY_LINE_RE.search(err.diag.context or "")
    return int(match.group(1)) - 1 if match else None


def may_be_json(err: BaseException) -> bool:
    """Whether the refusal may be jsonb's: PostgreSQL named the data column, or no line at all
    (a CHECK or a window merge names no column: checking every row's JSON would be wasted)."""
    if not isinstance(err, psycopg.Error):
        return False
    context = err.diag.context or ""
    return ", column data" in context or _COPY_LINE_RE.search(context) is None


def refusal_reason(err: BaseException) -> str:
    if isinstance(err, psycopg.Error):
        first = (err.diag.message_primary or str(err)).strip()
        return f"PostgreSQL refused it: {first} (SQLSTATE {err.sqlstate})"
    return f"could not be written: {type(err).__name__}: {err}"


def split_refused(rows: Sequence[Row], line: int | None) -> list[Sequence[Row]]:
    """How to retry rows that failed together: around the row PostgreSQL named (that row alone,
    so it is dead-lettered only once it fails by itself), else in halves. In the order to try."""
    if line is not None and 0 <= line < len(rows):
        parts = [rows[:line], rows[line : line + 1], rows[line + 1 :]]
    else:
        mid = len(rows) // 2
        parts = [rows[:mid], rows[mid:]]
    return [p for p in parts if p]


def _store_rows(
    conn: psycopg.Connection,
    rows: Sequence[Row],
    generations: dict[Partition, int],
    in_transaction: InTransaction | None,
) -> set[WindowKey]:
    if rows:
        with conn.cursor().copy(SQL.copy_raw_events) as copy:
            for chunk in raw_events_chunks(rows, generations):
                copy.write(chunk)
    if in_transaction is None:
        return set()
    return in_transaction(conn, [rec for _, rec in rows])


@dataclass(slots=True)
class Stored:
    """What the checkpoint's rows came to."""

    rows: list[Row]
    refused: list[tuple[KafkaMessage, Rejected]]
    touched: set[WindowKey]
    #: savepoint attempts beyond the first (0 when nothing was refused)
    extra_attempts: int = 0


def store_rows_isolating(
    conn: psycopg.Connection,
    rows: list[Row],
    generations: dict[Partition, int],
    in_transaction: InTransaction | None,
) -> Stored:
    """Write ``rows`` and their window partials; returns what was stored and what refused.

    Each attempt runs under a savepoint (one extra round trip on the hot path). When PostgreSQL
    refuses an attempt for its data, JSON it refuses as jsonb is found in one query (when the
    refusal may be jsonb's), then the rest is retried split around the line it named or in
    halves, until every refused message stands alone. One bad message in 20,000 costs 3 more
    attempts when PostgreSQL names its line (`rtmh bench ingest` measures it), about
    2 * log2(20,000) = 30 smaller ones when it does not (a window merge names none).

    A Python ValueError while formatting rows counts as the data's fault too: a bug that raises
    one for every row would dead-letter them all, bytes kept, rather than stop every service."""
    out = Stored([], [], set())
    todo: list[Sequence[Row]] = [rows]  # a stack: the last part is tried next
    json_checked = False
    attempts = 0
    while todo:
        part = todo.pop()
        attempts += 1
        try:
            with conn.transaction():
                out.touched |= _store_rows(conn, part, generations, in_transaction)
        except Exception as err:
            if not is_data_error(err):
                raise
            if len(part) == 1:
                msg, rec = part[0]
                reason = refusal_reason(err)
                out.refused.append((msg, Rejected(reason, index=rec.index)))
                log.warning(
                    "dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason
                )
                continue
            if not json_checked and may_be_json(err):
                json_checked = True
                part, invalid = _without_invalid_json(conn, part)
                out.refused.extend(invalid)
                if invalid:
                    todo.append(part)
                    continue
            todo.extend(reversed(split_refused(part, refused_line(err))))
            continue
        out.rows.extend(part)  # parts are tried in order, so rows keep the batch's order
    out.extra_attempts = attempts - 1
    if out.refused:
        metrics.REFUSED.inc(len(out.refused))
        metrics.ISOLATION_ATTEMPTS.inc(out.extra_attempts)
    return out


def _without_invalid_json(
    conn: psycopg.Connection, rows: Sequence[Row]
) -> tuple[Sequence[Row], list[tuple[KafkaMessage, Rejected]]]:
    """Split off the rows whose JSON PostgreSQL refuses as jsonb (numbers beyond its numeric
    range in keys the decoder skips, lone surrogate escapes): one query for all of them, where
    halving would take several attempts for each."""
    try:
        with conn.transaction():
            found = conn.execute(SQL.find_invalid_json, ([rec.data for _, rec in rows],)).fetchall()
    except Exception as err:
        if not is_data_error(err):
            raise
        return rows, []  # the data cannot even be sent as text: halving will find it
    bad = {int(i): str(message) for i, message in found}
    if not bad:
        return rows, []
    kept = [row for i, row in enumerate(rows) if i not in bad]
    invalid = [
        (rows[i][0], Rejected(f"PostgreSQL refused the JSON: {message}", index=rows[i][1].index))
        for i, message in sorted(bad.items())
    ]
    return kept, invalid
