"""Hole 6: the checkpoint's fence locks the offsets rows of its partitions in one fixed order.

Two workers whose batches share partitions (during a rebalance, or a zombie and its successor)
each lock those consumer_offsets rows with SELECT ... FOR UPDATE. Unless both lock them in the
same order, each can hold a row the other waits for: a deadlock, which PostgreSQL breaks by
aborting one checkpoint. Without ORDER BY the rows are locked in whatever order the plan yields
them, which for a sequential scan is where they lie in the table; with ORDER BY topic,
kafka_partition it is always sorted.

The test makes the difference visible without racing: the rows lie in the table unsorted
(partition 1 first), session A holds partition 1, and the checkpoint in session B (sequential
scans forced) blocks on it. Locking sorted, B holds partition 0 by then; locking in table order,
B holds nothing yet. A probes partition 0 with NOWAIT to tell which.
"""

from __future__ import annotations

import threading

import psycopg
import pytest

from rtmh.ingest.batch import Batch
from rtmh.ingest.store import load_offsets, write_batch_exactly_once
from rtmh.records import KafkaMessage, Rejected
from tests.integration.ingest_support import wait_for

GROUP = "g"
TOPIC = "t"
NEXT_OFFSET = 5

INSERT_ROW = (
    "INSERT INTO consumer_offsets (group_id, topic, kafka_partition, generation, next_offset)"
    " VALUES (%s, %s, %s, 0, %s)"
)
LOCK_ONE = (
    "SELECT 1 FROM consumer_offsets WHERE group_id = %s AND topic = %s AND kafka_partition = %s"
    " FOR UPDATE"
)


def _blocking_pids(conn: psycopg.Connection, pid: int) -> list[int]:
    row = conn.execute("SELECT pg_blocking_pids(%s)", (pid,)).fetchone()
    assert row is not None
    return list(row[0])


def test_fence_locks_offsets_rows_in_sorted_order(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as setup:
        # partition 1 first: a sequential scan meets it before partition 0
        for partition in (1, 0):
            setup.execute(INSERT_ROW, (GROUP, TOPIC, partition, NEXT_OFFSET))
        expected = load_offsets(setup, GROUP, [TOPIC])
    assert set(expected) == {(TOPIC, 1), (TOPIC, 0)}

    # B's checkpoint: one dead-lettered message per partition, continuing the stored offsets,
    # partition 1 first in the batch too (so only a sort puts partition 0 first)
    batch = Batch()
    for partition in (1, 0):
        msg = KafkaMessage(TOPIC, partition, NEXT_OFFSET, None, b"x", None)
        batch.add(msg, Rejected("lock order test"), 0)

    session_a = psycopg.connect(db_url)  # autocommit off: A's lock lasts until it rolls back
    session_b = psycopg.connect(db_url, autocommit=True)  # as the worker's connection
    observer = psycopg.connect(db_url, autocommit=True)
    # the plan must not sort by itself: a sequential scan, rows in table order
    session_b.execute("SET enable_indexscan = off")
    session_b.execute("SET enable_bitmapscan = off")
    session_b.execute("SET lock_timeout = '120s'")  # a wedged test fails instead of hanging
    pid_a, pid_b = session_a.info.backend_pid, session_b.info.backend_pid

    outcome: list[BaseException | None] = []

    def checkpoint_b() -> None:
        try:
            write_batch_exactly_once(session_b, GROUP, batch, dict(expected))
            outcome.append(None)
        except BaseException as err:  # reported by the test
            outcome.append(err)

    thread = threading.Thread(target=checkpoint_b, name="session-b", daemon=True)
    try:
        session_a.execute(LOCK_ONE, (GROUP, TOPIC, 1))
        thread.start()
        wait_for(
            lambda: pid_a in _blocking_pids(observer, pid_b) or bool(outcome),
            60,
            "session B's checkpoint to wait for A's lock on partition 1",
        )
        assert not outcome, f"B's checkpoint ended without waiting for A: {outcome[0]!r}"

        try:
            with session_a.transaction():  # a savepoint: A keeps partition 1 whatever happens
                session_a.execute(LOCK_ONE + " NOWAIT", (GROUP, TOPIC, 0))
        except psycopg.errors.LockNotAvailable:
            pass  # B locked partition 0 before waiting for partition 1: sorted order
        else:
            pytest.fail(
                "while waiting for partition 1, the checkpoint held no lock on partition 0: it "
                "locks consumer_offsets rows in table order, not sorted by (topic, partition)"
            )
    finally:
        session_a.rollback()  # releases partition 1 (and 0, if A took it): B goes on
        thread.join(60)
        for conn in (session_a, session_b, observer):
            conn.close()

    assert not thread.is_alive(), "B's checkpoint did not finish after A let go"
    assert outcome == [None], f"B's checkpoint failed: {outcome[0]!r}"
    with psycopg.connect(db_url) as conn:
        stored: dict[int, int] = dict(
            conn.execute(
                "SELECT kafka_partition, next_offset FROM consumer_offsets WHERE group_id = %s",
                (GROUP,),
            ).fetchall()
        )
    assert stored == {0: NEXT_OFFSET + 1, 1: NEXT_OFFSET + 1}
