"""Producing known traffic and running real workers for the ingest tests."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import psycopg

from rtmh.config import load_settings
from rtmh.ingest.pipeline import build_worker
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import ensure_topics, make_producer

KINDS = ("logs", "metrics", "events")

# Messages that can never be stored as events: each kind once in every 100 messages at 1 %.
BAD_MESSAGES: list[bytes] = [
    b"",
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"just a string"',
    b"{}",
    b'{"service": 42, "level": "info", "msg": "x"}',
    b'{"service": "", "msg": "empty service"}',
    b'{"service": "api", "msg": "nul \\u0000 inside"}',
    b'{"service": "api", "ts": "yesterday-ish", "msg": "bad ts"}',
    b'{"service": "api", "msg": "truncated',
    b'{"service": "api", "level": ["error"], "msg": "level is a list"}',
    b'{"service": "api", "msg": NaN}',
    b"null",
    b'{"service": "' + b"s" * 300 + b'", "msg": "service name too long"}',
]


def good_message(kind: str, seq: int, service: str) -> bytes:
    now = time.time()
    if kind == "logs":
        body: dict[str, object] = {
            "ts": now,
            "service": service,
            "host": "h1",
            "level": "error" if seq % 17 == 0 else "info",
            "msg": f"request {seq}",
            "seq": seq,
        }
    elif kind == "metrics":
        body = {
            "ts": now,
            "service": service,
            "host": "h1",
            "name": "latency_ms",
            "value": float(seq % 500),
            "seq": seq,
        }
    else:
        body = {"ts": now, "service": service, "type": "deploy", "seq": seq}
    return msgspec.json.encode(body)


def produce(
    bootstrap: str,
    prefix: str,
    count: int,
    *,
    bad_every: int = 0,
    start_seq: int = 0,
    partitions: int = 4,
) -> tuple[int, int]:
    """Produce ``count`` messages; every ``bad_every``-th is bad. Returns (good, bad)."""
    ensure_topics(bootstrap, [prefix + k for k in KINDS], partitions)
    producer = make_producer(bootstrap)
    rng = random.Random(start_seq)
    good = bad = 0
    for i in range(count):
        seq = start_seq + i
        kind = KINDS[i % 3]
        service = f"svc{rng.randrange(8)}"
        if bad_every and i % bad_every == bad_every - 1:
            value = BAD_MESSAGES[(i // bad_every) % len(BAD_MESSAGES)]
            bad += 1
        else:
            value = good_message(kind, seq, service)
            good += 1
        while True:
            try:
                producer.produce(prefix + kind, key=service.encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    return good, bad


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def wait_for_totals(url: str, good: int, bad: int, timeout: float = 120) -> None:
    wait_for(lambda: sum(counts(url)) >= good + bad, timeout, f"{good} rows + {bad} dead letters")
    time.sleep(1.0)  # anything beyond the expected totals would be a duplicate: give it a chance


def assert_exactly_once(url: str, good: int, bad: int) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (generation, topic, kafka_partition, kafka_offset)),"
            " count(DISTINCT (topic, data->>'seq')) FROM raw_events"
        ).fetchone()
        dead = conn.execute(
            "SELECT count(*), count(DISTINCT (generation, topic, kafka_partition, kafka_offset))"
            " FROM dead_letters"
        ).fetchone()
    assert row == (good, good, good), f"raw_events (rows, distinct offsets, distinct seq) = {row}"
    assert dead == (bad, bad), f"dead_letters (rows, distinct offsets) = {dead}"


def worker_env(url: str, bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_"))}
    env.update(
        POSTGRES_URL=url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        RTMH_TOPIC_PREFIX=prefix,
        RTMH_GROUP_ID=f"g-{prefix}",
        RTMH_BATCH_MAX_MESSAGES="5000",
    )
    env.update(extra)
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "rtmh.cli", "worker"],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return proc


@contextmanager
def worker_thread(url: str, bootstrap: str, prefix: str, **settings: object) -> Iterator[Worker]:
    """An in-process worker for tests that need no process-level faults."""
    cfg = load_settings(
        postgres_url=url,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        group_id=f"g-{prefix}",
        **settings,
    )
    worker = build_worker(cfg, url, bootstrap)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(30)
