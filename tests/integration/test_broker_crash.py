"""A broker crash under a running worker (issue 24): SIGKILL, back on the same port a second later.

The embedded broker comes back empty: topics are created again with new ids and offsets start at
0. The worker used to die with SIGSEGV here (librdkafka, fetching with a topic id it had cached
before the crash), and a worker that kept fetching at its old position could commit the new log
from there and never read the start of it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from rtmh.embedded.broker import EmbeddedBroker
from tests.integration.ingest_support import (
    KINDS,
    port_is_free,
    produce,
    start_worker,
    wait_for,
    wait_for_rows,
    worker_env,
)

BEFORE = 3_000
AFTER = 8_000  # more than before: the new logs pass the offsets stored for the old ones
AFTER_SEQ = 100_000
# part of the scenario, not a wait: the broker stays away long enough for fetches to fail
OUTAGE_S = 1.0


def produced(prefix: str, count: int, start_seq: int) -> Counter[tuple[str, int]]:
    """(topic, seq) of each message ``produce`` sends (no bad ones): kinds take turns."""
    return Counter((prefix + KINDS[i % 3], start_seq + i) for i in range(count))


def stored(url: str) -> tuple[Counter[tuple[str, int]], dict[int, set[int]]]:
    """(topic, seq) of every raw_events row; and the generations of old and new messages."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT topic, (data->>'seq')::int, generation FROM raw_events")
        seqs: Counter[tuple[str, int]] = Counter()
        generations: dict[int, set[int]] = {0: set(), 1: set()}
        for topic, seq, generation in rows:
            seqs[(topic, seq)] += 1
            generations[int(seq >= AFTER_SEQ)].add(generation)
    return seqs, generations


# 6 s: the default. 12 s: heartbeats 2 s apart, so the worker learns that the group is gone
# only after it has fetched from the new logs at its old offsets (without the re-check that
# follows an outage it committed them and skipped each new log's start, 2 runs out of 2).
@pytest.mark.parametrize("session_timeout_ms", ["6000", "12000"])
def test_worker_survives_a_broker_crash_and_stores_every_message_once(
    db_url: str, topic_prefix: str, tmp_path: Path, session_timeout_ms: str
) -> None:
    server = EmbeddedBroker(tmp_path / "broker")
    bootstrap = server.start()
    port = server.port
    assert port is not None
    log_path = tmp_path / "worker.log"
    env = worker_env(db_url, bootstrap, topic_prefix, RTMH_SESSION_TIMEOUT_MS=session_timeout_ms)
    worker = start_worker(env, log_path)

    def running() -> bool:
        return worker.poll() is None

    try:
        produce(bootstrap, topic_prefix, BEFORE)
        wait_for_rows(db_url, BEFORE, f"{BEFORE} rows before the crash", alive=running)

        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        time.sleep(OUTAGE_S)
        wait_for(lambda: port_is_free(port), 30, f"port {port} free")
        server.port = port
        assert server.start() == bootstrap, "the broker must come back on the same port"
        produce(bootstrap, topic_prefix, AFTER, start_seq=AFTER_SEQ)
        wait_for_rows(db_url, BEFORE + AFTER, f"{BEFORE + AFTER} rows", alive=running, log=log_path)
        assert running(), f"worker exited with {worker.returncode}"
    finally:
        if worker.poll() is None:
            worker.terminate()
            worker.wait(30)
        server.stop()

    # counted once the worker has stopped: nothing can land after this, duplicates included
    seqs, generations = stored(db_url)
    expected = produced(topic_prefix, BEFORE, 0) + produced(topic_prefix, AFTER, AFTER_SEQ)
    assert seqs == expected, (
        f"missing {sorted(expected - seqs)[:10]}, duplicated "
        f"{sorted(k for k, n in seqs.items() if n > 1)[:10]}"
    )
    # one reset, once: the old logs' rows stay generation 0, the new logs' are all generation 1
    assert generations == {0: {0}, 1: {1}}
    text = log_path.read_text()
    assert "Fatal Python error" not in text
    assert worker.returncode == 0 and "worker stopped" in text
