"""The ingest stage's repository: the only code that writes raw_events, dead_letters and offsets.

``write_batch_exactly_once`` is the checkpoint: raw rows, dead letters, window partials and the
next offsets commit in one transaction, after checking that nobody else moved those offsets since
this worker read them (a fenced zombie rolls back instead of duplicating).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from rtmh.ingest.batch import Batch, Partition, PartitionProgress
from rtmh.records import Rejected

RAW_COLUMNS = (
    "topic, kafka_partition, kafka_offset, generation, message_key, data, event_time, "
    "service, host, level, flags"
)

COPY_RAW_EVENTS = f"COPY raw_events ({RAW_COLUMNS}) FROM STDIN"

COPY_DEAD_LETTERS = (
    "COPY dead_letters (topic, kafka_partition, kafka_offset, generation, message_key, payload, "
    "reason, broker_time) FROM STDIN"
)

LOCK_OFFSETS = """
SELECT topic, kafka_partition, generation, next_offset
FROM consumer_offsets
WHERE group_id = %s
  AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
FOR UPDATE
"""

LOAD_OFFSETS = """
SELECT topic, kafka_partition, generation, next_offset, last_digest
FROM consumer_offsets
WHERE group_id = %s AND topic = ANY(%s::text[])
"""

UPDATE_OFFSET = """
UPDATE consumer_offsets
SET generation = %s, next_offset = %s, last_digest = %s, updated_at = now()
WHERE group_id = %s AND topic = %s AND kafka_partition = %s
"""

INSERT_OFFSET = """
INSERT INTO consumer_offsets (group_id, topic, kafka_partition, generation, next_offset,
                              last_digest)
VALUES (%s, %s, %s, %s, %s, %s)
"""

MAINTAIN_PARTITIONS = "SELECT rtmh_maintain_partitions(%s, %s)"


class Fenced(Exception):
    """Another worker committed these partitions since we read their offsets: our batch is stale."""


@dataclass(frozen=True, slots=True)
class StoredOffset:
    generation: int
    next_offset: int
    last_digest: bytes | None


def load_offsets(
    conn: psycopg.Connection, group_id: str, topics: Sequence[str]
) -> dict[Partition, StoredOffset]:
    rows = conn.execute(LOAD_OFFSETS, (group_id, list(topics))).fetchall()
    conn.commit()
    return {
        (t, p): StoredOffset(g, n, bytes(d) if d is not None else None) for t, p, g, n, d in rows
    }


def _raw_rows(batch: Batch) -> Iterable[tuple[object, ...]]:
    fromts = datetime.fromtimestamp
    for msg, rec in batch.records:
        yield (
            msg.topic,
            msg.partition,
            msg.offset,
            batch.progress[(msg.topic, msg.partition)].generation,
            msg.key.decode("utf-8", "replace") if msg.key is not None else None,
            rec.data,
            fromts(rec.event_time, UTC),
            rec.service,
            rec.host,
            rec.level,
            list(rec.flags),
        )


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A value as COPY's text format spells it: backslash, tab, newline and CR escaped."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _flags_text(flags: tuple[str, ...]) -> str:
    # flags are a fixed vocabulary of identifiers (e.g. ts_out_of_range): no quoting needed
    return "{" + ",".join(flags) + "}"


def raw_events_copy(batch: Batch) -> bytes:
    """The batch's raw_events rows in COPY text format, the same values ``_raw_rows`` yields."""
    fromts = datetime.fromtimestamp
    progress = batch.progress
    lines: list[str] = []
    append = lines.append
    for msg, rec in batch.records:
        key = msg.key
        append(
            "\t".join(
                (
                    msg.topic,
                    str(msg.partition),
                    str(msg.offset),
                    str(progress[(msg.topic, msg.partition)].generation),
                    "\\N" if key is None else _copy_text(key.decode("utf-8", "replace")),
                    _copy_text(rec.data),
                    fromts(rec.event_time, UTC).isoformat(),
                    _copy_text(rec.service),
                    "\\N" if rec.host is None else _copy_text(rec.host),
                    "\\N" if rec.level is None else rec.level,
                    _flags_text(rec.flags),
                )
            )
        )
    append("")
    return "\n".join(lines).encode("utf-8")


def _dead_rows(batch: Batch) -> Iterable[tuple[object, ...]]:
    for msg, rej in batch.rejected:
        yield (
            msg.topic,
            msg.partition,
            msg.offset,
            batch.progress[(msg.topic, msg.partition)].generation,
            msg.key,
            msg.value,
            rej.reason,
            datetime.fromtimestamp(msg.timestamp_ms / 1000, UTC) if msg.timestamp_ms else None,
        )


def _fence(
    conn: psycopg.Connection,
    group_id: str,
    expected: dict[Partition, StoredOffset | None],
) -> None:
    parts = list(expected)
    rows = conn.execute(
        LOCK_OFFSETS, (group_id, [t for t, _ in parts], [p for _, p in parts])
    ).fetchall()
    found = {(t, p): (g, n) for t, p, g, n in rows}
    for part in parts:
        exp = expected[part]
        now = found.get(part)
        want = None if exp is None else (exp.generation, exp.next_offset)
        if now != want:
            raise Fenced(
                f"{part[0]}[{part[1]}]: stored offset is {now}, this batch expected {want}"
            )


def _store_offsets(
    conn: psycopg.Connection,
    group_id: str,
    progress: dict[Partition, PartitionProgress],
    expected: dict[Partition, StoredOffset | None],
) -> None:
    with conn.cursor() as cur:
        for (topic, partition), prog in progress.items():
            if expected[(topic, partition)] is None:
                cur.execute(
                    INSERT_OFFSET,
                    (
                        group_id,
                        topic,
                        partition,
                        prog.generation,
                        prog.next_offset,
                        prog.last_digest,
                    ),
                )
            else:
                cur.execute(
                    UPDATE_OFFSET,
                    (
                        prog.generation,
                        prog.next_offset,
                        prog.last_digest,
                        group_id,
                        topic,
                        partition,
                    ),
                )


def write_batch_exactly_once(
    conn: psycopg.Connection,
    group_id: str,
    batch: Batch,
    expected: dict[Partition, StoredOffset | None],
    in_transaction: Callable[[psycopg.Connection, Batch], None] | None = None,
) -> None:
    """The checkpoint. Raises Fenced (and writes nothing) when the offsets moved under us.

    ``in_transaction`` adds the later stages' writes (window partials) to the same transaction.
    """
    try:
        with conn.transaction():
            _fence(conn, group_id, {p: expected.get(p) for p in batch.progress})
            if batch.records:
                with conn.cursor().copy(COPY_RAW_EVENTS) as copy:
                    for row in _raw_rows(batch):
                        copy.write_row(row)
            if batch.rejected:
                with conn.cursor().copy(COPY_DEAD_LETTERS) as copy:
                    for row in _dead_rows(batch):
                        copy.write_row(row)
            if in_transaction is not None:
                in_transaction(conn, batch)
            _store_offsets(conn, group_id, batch.progress, expected)
    except psycopg.errors.UniqueViolation as err:
        # another worker inserted the first offset row of a partition concurrently
        raise Fenced(str(err).splitlines()[0]) from None


FIND_INVALID_JSON = """
SELECT i - 1, (pg_input_error_info(d, 'jsonb')).message
FROM unnest(%s::text[]) WITH ORDINALITY AS t(d, i)
WHERE NOT pg_input_is_valid(d, 'jsonb')
"""


def quarantine_invalid_json(conn: psycopg.Connection, batch: Batch) -> int:
    """Move records PostgreSQL refuses as jsonb (e.g. numbers beyond its numeric range, which
    the decoder does not range-check in keys it skips) to the batch's dead letters.

    Runs only after a COPY failed with a data error, so the hot path pays nothing for it."""
    rows = conn.execute(FIND_INVALID_JSON, ([rec.data for _, rec in batch.records],)).fetchall()
    conn.commit()
    bad = {int(i): str(message) for i, message in rows}
    if not bad:
        return 0
    kept = []
    for i, (msg, rec) in enumerate(batch.records):
        if i in bad:
            batch.rejected.append((msg, Rejected(f"PostgreSQL refused the JSON: {bad[i]}")))
        else:
            kept.append((msg, rec))
    batch.records = kept
    return len(bad)


def maintain_partitions(
    conn: psycopg.Connection, days_ahead: int, retention_days: int
) -> list[str]:
    with conn.transaction():
        rows = conn.execute(MAINTAIN_PARTITIONS, (days_ahead, retention_days)).fetchall()
    return [r[0] for r in rows]
