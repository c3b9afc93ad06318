"""The ingest stage's repository: the only code that writes raw_events, dead_letters and offsets.

``write_batch_exactly_once`` is the checkpoint: raw rows, dead letters, window partials and the
next offsets commit in one transaction, after checking that nobody else moved those offsets since
this worker read them (a fenced zombie rolls back instead of duplicating).

Nothing a message holds may stop ingest: when PostgreSQL refuses rows for what they contain
(SQLSTATE classes 22 and 23), the rows are written in halves under savepoints until each refused
message stands alone; those go to dead_letters with the database's words as the reason, and the
rest commit in the same transaction (``_store_rows_isolating``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch, Partition, PartitionProgress
from rtmh.records import DecodedRecord, KafkaMessage, Rejected, WindowKey

log = logging.getLogger(__name__)

RAW_COLUMNS = (
    "topic, kafka_partition, kafka_offset, generation, message_key, message_key_bytes, data, "
    "event_time, service, host, level, flags"
)

#: one consumed message and what it decoded to
Row = tuple[KafkaMessage, DecodedRecord]
#: the later stages' writes inside the checkpoint (window partials): given the rows being stored,
#: returns the windows it touched. Called once per attempt, so it must only write rows' effects.
InTransaction = Callable[[psycopg.Connection, Sequence[DecodedRecord]], set[WindowKey]]

COPY_RAW_EVENTS = f"COPY raw_events ({RAW_COLUMNS}) FROM STDIN"

COPY_DEAD_LETTERS = (
    "COPY dead_letters (topic, kafka_partition, kafka_offset, generation, message_key, payload, "
    "reason, broker_time) FROM STDIN"
)

# Rows are locked in one order for every worker: two workers whose batches share partitions then
# queue on the first shared row instead of each holding one the other waits for (a deadlock).
LOCK_OFFSETS = """
SELECT topic, kafka_partition, generation, next_offset, last_digest
FROM consumer_offsets
WHERE group_id = %s
  AND (topic, kafka_partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))
ORDER BY topic, kafka_partition
FOR UPDATE
"""

LOAD_OFFSETS = """
SELECT topic, kafka_partition, generation, next_offset, last_digest, topic_id
FROM consumer_offsets
WHERE group_id = %s AND topic = ANY(%s::text[])
"""

UPDATE_OFFSET = """
UPDATE consumer_offsets
SET generation = %s, next_offset = %s, last_digest = %s, topic_id = %s, updated_at = now()
WHERE group_id = %s AND topic = %s AND kafka_partition = %s
"""

INSERT_OFFSET = """
INSERT INTO consumer_offsets (group_id, topic, kafka_partition, generation, next_offset,
                              last_digest, topic_id)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

MAINTAIN_PARTITIONS = "SELECT rtmh_maintain_partitions(%s, %s)"


class Fenced(Exception):
    """The batch may not be committed: another worker committed these partitions since we read
    their offsets, or the batch does not continue where the stored offsets end."""


class AlreadyCommitted(Exception):
    """The stored offsets are exactly where this batch ends: it committed on an earlier attempt
    whose reply was lost (the connection broke after COMMIT was sent)."""


@dataclass(frozen=True, slots=True)
class StoredOffset:
    generation: int
    next_offset: int
    last_digest: bytes | None
    #: the topic id the offset belongs to; None when unknown (see migration 005)
    topic_id: str | None = None


def load_offsets(
    conn: psycopg.Connection, group_id: str, topics: Sequence[str]
) -> dict[Partition, StoredOffset]:
    rows = conn.execute(LOAD_OFFSETS, (group_id, list(topics))).fetchall()
    conn.commit()
    return {
        (t, p): StoredOffset(g, n, bytes(d) if d is not None else None, i)
        for t, p, g, n, d, i in rows
    }


# --- raw_events rows as COPY text -----------------------------------------------------------
# The worker formats raw_events rows itself instead of building tuples for psycopg's write_row:
# 1.1 µs a row instead of 3.0 µs (measured, 20,000 rows of rtmh.simulate traffic). The text goes
# out in chunks while the next ones are formatted, so PostgreSQL parses one chunk while Python
# builds the next. tests/integration/test_bench_ingest.py checks the rows stored both ways match.

#: rows per COPY chunk (~150 kB of typical log lines)
COPY_CHUNK_ROWS = 1000

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
#: event times up to 9999-12-31 are formatted inline; others (never seen) by datetime
_MAX_FAST_EPOCH = 253_402_300_800


def key_columns(key: bytes | None) -> tuple[str | None, bytes | None]:
    """(message_key, message_key_bytes) for a Kafka key: the text when the key is valid UTF-8
    without NUL (PostgreSQL text can hold neither), else a readable escaped form and the bytes."""
    if key is None:
        return None, None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and "\x00" not in text:
        return text, None
    escaped = key.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return escaped, key


def _key_text(key: bytes | None) -> str:
    """Both key columns in COPY text format, tab-separated."""
    text, raw = key_columns(key)
    if text is None:
        return "\\N\t\\N"
    if raw is None:
        return f"{_copy_text(text)}\t\\N"
    return f"{_copy_text(text)}\t\\\\x{raw.hex()}"


def _copy_text(value: str) -> str:
    """A value as COPY's text format spells it: backslash, tab, newline and CR escaped (the only
    characters it treats specially; NUL never gets here: decode refuses it in values and
    ``key_columns`` escapes it in keys)."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _array_text(items: tuple[str, ...]) -> str:
    """A text[] literal, each element quoted: '{}' for none."""
    quoted = ('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
    return _copy_text("{" + ",".join(quoted) + "}")


def _day_time(sec: int, cache: dict[int, str]) -> str:
    """'YYYY-MM-DD HH:MM:SS' of an epoch second (UTC), formatted once per second."""
    text = cache.get(sec)
    if text is None:
        text = cache[sec] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
    return text


def raw_events_chunks(
    rows: Sequence[Row], generations: dict[Partition, int], chunk_rows: int = COPY_CHUNK_ROWS
) -> Iterator[bytes]:
    """``rows`` as raw_events rows (columns RAW_COLUMNS) in COPY text format, ``chunk_rows`` a
    chunk; ``generations`` gives each partition's generation."""
    # topic, partition and generation are the same for all of a partition's rows: per partition,
    # the text before the offset and the text between offset and key
    around_offset = {
        part: (f"{_copy_text(part[0])}\t{part[1]}\t", f"\t{generation}\t")
        for part, generation in generations.items()
    }
    seconds: dict[int, str] = {}
    flag_texts: dict[tuple[str, ...], str] = {(): "{}"}
    # keys, services, hosts and levels repeat within a batch: escape each spelling once
    # (a dict hit instead of a call)
    keys: dict[bytes | None, str] = {None: "\\N\t\\N"}
    texts: dict[str | None, str] = {None: "\\N"}
    escapes = _COPY_ESCAPES
    lines: list[str] = []
    append = lines.append
    for msg, rec in rows:
        head, tail = around_offset[(msg.topic, msg.partition)]
        key = keys.get(msg.key)
        if key is None:
            key = keys[msg.key] = _key_text(msg.key)
        service = texts.get(rec.service)
        if service is None:
            service = texts[rec.service] = _copy_text(rec.service)
        host = texts.get(rec.host)
        if host is None:
            assert rec.host is not None
            host = texts[rec.host] = _copy_text(rec.host)
        level = texts.get(rec.level)
        if level is None:
            assert rec.level is not None
            level = texts[rec.level] = _copy_text(rec.level)
        flags = flag_texts.get(rec.flags)
        if flags is None:
            flags = flag_texts[rec.flags] = _array_text(rec.flags)
        data = rec.data
        if "\\" in data or "\t" in data or "\n" in data or "\r" in data:
            data = data.translate(escapes)
        # event_time to the microsecond exactly as datetime.fromtimestamp(t, UTC) rounds it
        # (half-even on the fraction, which t - sec holds exactly), inline: 0.9 -> 0.4 µs
        t = rec.event_time
        if 0 <= t < _MAX_FAST_EPOCH:
            sec = int(t)
            micros = round((t - sec) * 1e6)
            if micros >= 1_000_000:
                sec += 1
                micros -= 1_000_000
            day_time = seconds.get(sec)
            if day_time is None:
                day_time = _day_time(sec, seconds)
            when = f"{day_time}.{micros:06d}+00"
        else:
            when = datetime.fromtimestamp(t, UTC).isoformat()
        append(
            f"{head}{msg.offset}{tail}{key}\t{data}\t{when}\t{service}\t{host}\t{level}\t{flags}\n"
        )
        if len(lines) >= chunk_rows:
            yield "".join(lines).encode("utf-8")
            lines.clear()
    if lines:
        yield "".join(lines).encode("utf-8")


def batch_generations(batch: Batch) -> dict[Partition, int]:
    return {part: prog.generation for part, prog in batch.progress.items()}


def raw_events_copy(batch: Batch) -> bytes:
    """All of the batch's raw_events rows as one COPY text buffer."""
    return b"".join(raw_events_chunks(batch.records, batch_generations(batch)))


def _broker_time(timestamp_ms: int | None) -> datetime | None:
    """The broker timestamp as a datetime; None when absent or beyond what datetime holds (a
    producer may set any 64-bit value)."""
    if not timestamp_ms:
        return None
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _reason_text(reason: str) -> str:
    """A reason PostgreSQL text can hold: reasons may quote the message, NUL and lone surrogates
    included."""
    text = reason.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dead_rows(batch: Batch) -> Iterable[tuple[object, ...]]:
    for msg, rej in batch.rejected:
        yield (
            msg.topic,
            msg.partition,
            msg.offset,
            batch.progress[(msg.topic, msg.partition)].generation,
            msg.key,
            msg.value,
            _reason_text(rej.reason),
            _broker_time(msg.timestamp_ms),
        )


def continuity_error(
    part: Partition, expected: StoredOffset | None, prog: PartitionProgress
) -> str | None:
    """Why a partition's batch does not continue where its offsets row ends, or None.

    Within one generation offsets only move forward: a batch that starts before the stored next
    offset re-reads messages already stored (librdkafka moved the position by itself), and
    committing it would move next_offset backwards, where a zombie holding the old value passes
    the fence again. A batch may start after it: compaction, transaction markers and retention
    leave offsets that hold no message, and refusing those batches would re-read them forever.
    A new generation (a reset log) or a partition never stored starts anywhere."""
    name = f"{part[0]}[{part[1]}]"
    if prog.rewound_at is not None:
        return (
            f"{name}: offsets went backwards within the batch (to {prog.rewound_at}); the "
            "consumer's position moved by itself"
        )
    if expected is None or prog.generation != expected.generation:
        return None
    if prog.first_offset < expected.next_offset:
        return (
            f"{name}: batch starts at offset {prog.first_offset}, before the stored next offset "
            f"{expected.next_offset} of generation {expected.generation}; the consumer's position "
            "moved backwards by itself"
        )
    return None


def _fence(
    conn: psycopg.Connection,
    group_id: str,
    expected: dict[Partition, StoredOffset | None],
    progress: dict[Partition, PartitionProgress],
) -> None:
    """Lock the batch's offsets rows and check they still say what this worker last saw.

    Raises AlreadyCommitted when every row already says where this batch ends (its own commit,
    whose reply was lost), Fenced when they say anything else or the batch does not continue
    them."""
    parts = sorted(expected)
    rows = conn.execute(
        LOCK_OFFSETS, (group_id, [t for t, _ in parts], [p for _, p in parts])
    ).fetchall()
    found = {(t, p): (g, n, bytes(d) if d is not None else None) for t, p, g, n, d in rows}
    if (
        found
        and len(found) == len(parts)
        and all(
            found[part] == (prog.generation, prog.next_offset, prog.last_digest)
            for part, prog in progress.items()
        )
    ):
        raise AlreadyCommitted(_positions_text(progress))
    for part in parts:
        exp = expected[part]
        now = found.get(part)
        want = None if exp is None else (exp.generation, exp.next_offset)
        if (now[:2] if now is not None else None) != want:
            raise Fenced(
                f"{part[0]}[{part[1]}]: stored offset is {now and now[:2]}, this batch "
                f"expected {want}"
            )
        broken = continuity_error(part, exp, progress[part])
        if broken is not None:
            raise Fenced(broken)


def _positions_text(progress: dict[Partition, PartitionProgress]) -> str:
    return ", ".join(
        f"{t}[{p}] generation {prog.generation} next {prog.next_offset}"
        for (t, p), prog in sorted(progress.items())
    )


def _store_offsets(
    conn: psycopg.Connection,
    group_id: str,
    progress: dict[Partition, PartitionProgress],
    expected: dict[Partition, StoredOffset | None],
    topic_ids: Mapping[str, str | None],
) -> None:
    inserts: list[tuple[object, ...]] = []
    updates: list[tuple[object, ...]] = []
    for (topic, partition), prog in progress.items():
        topic_id = topic_ids.get(topic)
        if expected[(topic, partition)] is None:
            inserts.append(
                (
                    group_id,
                    topic,
                    partition,
                    prog.generation,
                    prog.next_offset,
                    prog.last_digest,
                    topic_id,
                )
            )
        else:
            updates.append(
                (
                    prog.generation,
                    prog.next_offset,
                    prog.last_digest,
                    topic_id,
                    group_id,
                    topic,
                    partition,
                )
            )
    # executemany pipelines the statements: one round trip, not one per partition (fence, 12
    # offsets and commit: 1.1 -> 0.7 ms, measured)
    with conn.cursor() as cur:
        if inserts:
            cur.executemany(INSERT_OFFSET, inserts)
        if updates:
            cur.executemany(UPDATE_OFFSET, updates)


def write_batch_exactly_once(
    conn: psycopg.Connection,
    group_id: str,
    batch: Batch,
    expected: dict[Partition, StoredOffset | None],
    in_transaction: InTransaction | None = None,
    topic_ids: Mapping[str, str | None] | None = None,
) -> Stored:
    """The checkpoint. Raises Fenced (and writes nothing) when the offsets moved under us or the
    batch does not continue them, AlreadyCommitted (writes nothing) when an earlier attempt of
    this very batch committed.

    ``topic_ids``: the id of each topic the partitions' starts were decided on, stored with the
    offsets (missing or None: unknown).

    ``in_transaction`` adds the later stages' writes (window partials) to the same transaction;
    the windows they touched end up in ``batch.touched_windows``. Messages PostgreSQL refuses
    move from ``batch.records`` to ``batch.rejected`` and are dead-lettered in this transaction.
    """
    try:
        with conn.transaction():
            _fence(conn, group_id, {p: expected.get(p) for p in batch.progress}, batch.progress)
            stored = _store_rows_isolating(
                conn, batch.records, batch_generations(batch), in_transaction
            )
            if stored.refused:
                batch.records = stored.rows
                batch.rejected.extend(stored.refused)
            batch.touched_windows = stored.touched
            if batch.rejected:
                with conn.cursor().copy(COPY_DEAD_LETTERS) as copy:
                    for row in _dead_rows(batch):
                        copy.write_row(row)
            _store_offsets(conn, group_id, batch.progress, expected, topic_ids or {})
    except psycopg.errors.UniqueViolation as err:
        # another worker inserted the first offset row of a partition concurrently
        raise Fenced(str(err).splitlines()[0]) from None
    return stored


# --- the safety net: isolating what PostgreSQL refuses -------------------------------------------


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
        with conn.cursor().copy(COPY_RAW_EVENTS) as copy:
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


def _store_rows_isolating(
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
                msg = part[0][0]
                reason = refusal_reason(err)
                out.refused.append((msg, Rejected(reason)))
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


FIND_INVALID_JSON = """
SELECT i - 1, (pg_input_error_info(d, 'jsonb')).message
FROM unnest(%s::text[]) WITH ORDINALITY AS t(d, i)
WHERE NOT pg_input_is_valid(d, 'jsonb')
"""


def _without_invalid_json(
    conn: psycopg.Connection, rows: Sequence[Row]
) -> tuple[Sequence[Row], list[tuple[KafkaMessage, Rejected]]]:
    """Split off the rows whose JSON PostgreSQL refuses as jsonb (numbers beyond its numeric
    range in keys the decoder skips, lone surrogate escapes): one query for all of them, where
    halving would take several attempts for each."""
    try:
        with conn.transaction():
            found = conn.execute(FIND_INVALID_JSON, ([rec.data for _, rec in rows],)).fetchall()
    except Exception as err:
        if not is_data_error(err):
            raise
        return rows, []  # the data cannot even be sent as text: halving will find it
    bad = {int(i): str(message) for i, message in found}
    if not bad:
        return rows, []
    kept = [row for i, row in enumerate(rows) if i not in bad]
    invalid = [
        (rows[i][0], Rejected(f"PostgreSQL refused the JSON: {message}"))
        for i, message in sorted(bad.items())
    ]
    return kept, invalid


def maintain_partitions(
    conn: psycopg.Connection, days_ahead: int, retention_days: int
) -> list[str]:
    with conn.transaction():
        rows = conn.execute(MAINTAIN_PARTITIONS, (days_ahead, retention_days)).fetchall()
    return [r[0] for r in rows]
