"""`rtmh bench ingest`, safety-net phase: what one message PostgreSQL refuses costs a checkpoint.

A batch of the worker's size, decoded from the benchmark's own workload, is checkpointed by the
worker's own ``write_batch_exactly_once`` with the window stage, once clean and once with one
message in the middle that a CHECK constraint refuses (a refusal no decoder check foresees, so the
safety net has to find it by splitting). Each is repeated and the median reported: the difference
is the price of isolating one bad message, the extra attempts how many savepoints it took.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg

from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.ingest.batch import Batch
from rtmh.ingest.decode import decode
from rtmh.ingest.store import write_batch_exactly_once
from rtmh.records import KafkaMessage, Kind
from rtmh.worker import window_stage

#: the message text the add_poison_check query's CHECK refuses
POISON = "rtmh-bench-poison"
REPEATS = 5

Message = tuple[str, bytes, bytes]  # (kind, key, value), as bench.ingest generates them


def _batch(messages: list[Message], topic_prefix: str, poisoned: bool) -> Batch:
    """One partition's batch; with ``poisoned``, the middle message is one the CHECK refuses."""
    batch = Batch()
    poison_at = len(messages) // 2 if poisoned else -1
    for offset, (kind, key, value) in enumerate(messages):
        if offset == poison_at:
            kind = Kind.LOGS.value
            value = msgspec.json.encode({"service": "bench", "level": "error", "msg": POISON})
        msg = KafkaMessage(f"{topic_prefix}{kind}", 0, offset, key, value, None)
        batch.add(msg, decode(msg, Kind(kind)), 0)
    return batch


def _checkpoint(conn: psycopg.Connection, batch: Batch, settings: Settings) -> tuple[float, int]:
    """Seconds for one checkpoint (fence, rows, windows, offsets, commit) and extra attempts."""
    group = f"bench-{uuid.uuid4().hex[:8]}"  # a new group: nothing to fence against
    started = time.perf_counter()
    stored = write_batch_exactly_once(
        conn, group, batch, dict.fromkeys(batch.progress), window_stage(settings)
    )
    return time.perf_counter() - started, stored.extra_attempts


def run_safety_net(
    url: str, messages: list[Message], settings: Settings, advance: Callable[[int], None]
) -> dict[str, Any]:
    size = min(len(messages), settings.batch_max_messages)
    sample = messages[:size]
    clean: list[float] = []
    poisoned: list[float] = []
    attempts: list[int] = []
    refused = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(load("bench").add_poison_check)
        for _ in range(REPEATS):
            seconds, _extra = _checkpoint(conn, _batch(sample, "bench.", False), settings)
            clean.append(seconds)
            batch = _batch(sample, "bench.", True)
            seconds, extra = _checkpoint(conn, batch, settings)
            poisoned.append(seconds)
            attempts.append(extra)
            refused += len(batch.rejected)
            advance(2)
    if refused != REPEATS:
        raise RuntimeError(f"expected {REPEATS} refused messages, the safety net found {refused}")
    clean_ms = statistics.median(clean) * 1000
    poisoned_ms = statistics.median(poisoned) * 1000
    return {
        "batch_messages": size,
        "repeats": REPEATS,
        "clean_ms": clean_ms,
        "one_refused_ms": poisoned_ms,
        "extra_ms": poisoned_ms - clean_ms,
        "extra_attempts": statistics.median(attempts),
        "note": "a CHECK constraint refuses the middle message; median checkpoint time",
    }
