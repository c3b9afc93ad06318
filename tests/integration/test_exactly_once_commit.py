"""Hole 4: a checkpoint whose COMMIT reply is lost.

PostgreSQL commits the batch, then the connection breaks before the worker reads the reply. The
worker retries the checkpoint and finds the offsets already where this very batch puts them. That
is its own commit, not another worker's: the batch must count as committed (its after-commit
hooks run, its windows are evaluated), not as fenced and dropped, and nothing may be stored
twice.

The fault is real: the worker talks to the embedded PostgreSQL through a TCP proxy
(``pg_proxy.PgProxy``) that swallows the first checkpoint's COMMIT reply and closes the
connection. It is armed once the worker owns its partitions and before any message exists, so the
next COMMIT on the wire is the first checkpoint's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import psycopg
import pytest
from prometheus_client import REGISTRY

from rtmh.config import load_settings
from rtmh.ingest.batch import Batch
from rtmh.records import DecodedRecord, WindowKey
from rtmh.worker import build_worker
from tests.integration.ingest_support import assert_exactly_once, counts, produce, wait_for
from tests.integration.pg_proxy import PgProxy

MESSAGES = 3000
BAD_EVERY = 50
FENCED_SAMPLE = "rtmh_ingest_fenced_batches_total"
RETRIES_SAMPLE = "rtmh_ingest_db_retries_total"

Offset = tuple[str, int, int]  # (topic, partition, offset)


def _sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def _stored_offsets(url: str) -> list[Offset]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT topic, kafka_partition, kafka_offset FROM raw_events"
            " UNION ALL SELECT topic, kafka_partition, kafka_offset FROM dead_letters"
        ).fetchall()
    return [(str(t), int(p), int(o)) for t, p, o in rows]


def test_lost_commit_reply_counts_as_committed(
    db_url: str, broker: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rtmh.ingest")
    settings = load_settings(
        postgres_url=db_url,
        kafka_bootstrap_servers=broker,
        topic_prefix=topic_prefix,
        group_id=f"g-{topic_prefix}",
        batch_max_messages=500,
    )
    fenced_before = _sample(FENCED_SAMPLE)
    retries_before = _sample(RETRIES_SAMPLE)

    proxy = PgProxy(db_url)
    worker = build_worker(settings, proxy.url, broker, rules=False)

    # what each committed batch handed to the after-commit hooks (run on the writer thread)
    hooked: list[tuple[list[Offset], set[str], set[WindowKey]]] = []

    def record_batch(batch: Batch, touched: set[WindowKey]) -> None:
        offsets = [(m.topic, m.partition, m.offset) for m, _ in batch.records]
        offsets += [(m.topic, m.partition, m.offset) for m, _ in batch.rejected]
        hooked.append((offsets, {rec.data for _, rec in batch.records}, set(touched)))

    worker.after_commit.append(record_batch)

    # the records written by the transaction whose reply gets lost: the window stage runs inside
    # the checkpoint's transaction, and until the proxy fires only that transaction writes
    in_lost_commit: set[str] = set()
    window_stage = worker.checkpoints.in_transaction
    assert window_stage is not None

    def watching_stage(
        conn: psycopg.Connection, records: Sequence[DecodedRecord]
    ) -> set[WindowKey]:
        if not proxy.fired.is_set():
            in_lost_commit.update(rec.data for rec in records)
        return window_stage(conn, records)

    worker.checkpoints.in_transaction = watching_stage

    crashed: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as err:  # reported by the test, not as a stray thread exception
            crashed.append(err)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    try:
        # owning every partition: the offsets are loaded, maintenance committed, so the next
        # COMMIT is the first checkpoint's (no message exists before produce below)
        wait_for(
            lambda: len(worker.owned.generation) == 3 * settings.partitions or bool(crashed),
            120,
            "the worker to own its partitions",
        )
        assert not crashed, f"worker crashed: {crashed[0]!r}"
        proxy.arm_drop_after_commit()
        good, bad = produce(broker, topic_prefix, MESSAGES, bad_every=BAD_EVERY)
        wait_for(
            lambda: sum(counts(db_url)) >= good + bad or bool(crashed),
            180,
            f"{good} rows + {bad} dead letters",
        )
        assert not crashed, f"worker crashed: {crashed[0]!r}"
    finally:
        worker.stop()
        thread.join(60)
        proxy.close()
    assert not thread.is_alive(), "the worker did not stop"
    assert not crashed, f"worker crashed: {crashed[0]!r}"

    retry_lines = [
        r.getMessage()
        for r in caplog.records
        if r.name == "rtmh.ingest.worker" and r.levelno >= logging.WARNING
    ]
    context = "worker warnings:\n  " + "\n  ".join(retry_lines)

    # the fault really happened, and the worker went through its DB retry
    assert proxy.fired.is_set(), "the proxy never saw a COMMIT reply to swallow"
    assert in_lost_commit, "the transaction whose reply was lost stored no records"
    assert _sample(RETRIES_SAMPLE) > retries_before, "the worker never retried the checkpoint"

    # PostgreSQL: every message exactly once
    assert_exactly_once(db_url, good, bad)

    # the hooks: every message exactly once, across all committed batches
    stored = _stored_offsets(db_url)
    seen = [offset for offsets, _, _ in hooked for offset in offsets]
    missing = set(stored) - set(seen)
    assert not missing, (
        f"{len(missing)} of {len(stored)} stored messages never reached the after-commit hooks "
        f"(the batch whose COMMIT reply was lost?); {len(hooked)} batches hooked\n{context}"
    )
    assert len(seen) == len(set(seen)) == good + bad, (
        f"hooks saw {len(seen)} messages, {len(set(seen))} distinct; {good + bad} produced"
    )

    # the batch whose reply was lost: handed to the hooks, with the windows it wrote
    lost = [i for i, (_, data, _) in enumerate(hooked) if data & in_lost_commit]
    assert len(lost) == 1, f"the lost-reply batch's records are in hooked batches {lost}"
    _, data, touched = hooked[lost[0]]
    assert in_lost_commit <= data, "the hooked batch holds only part of the lost-reply batch"
    assert touched, "the batch whose COMMIT reply was lost reached the hooks without windows"

    # it was not counted as fenced: no other worker ever touched these offsets
    fenced = _sample(FENCED_SAMPLE) - fenced_before
    assert fenced == 0, f"{fenced:.0f} batch(es) counted as fenced\n{context}"
