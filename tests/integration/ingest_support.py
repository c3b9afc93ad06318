"""Producing known traffic and running real workers for the ingest tests."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import psycopg

from rtmh.config import Settings, load_settings
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import ensure_topics, make_producer, produce_waiting
from rtmh.worker import build_worker

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
        produce_waiting(producer, prefix + kind, value, service.encode())
    assert producer.flush(60) == 0
    return good, bad


def counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM raw_events), (SELECT count(*) FROM dead_letters)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on ``port`` now (bound the way servers bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# The longest a healthy worker may store nothing while messages wait: a reset found after a
# broker restart (a session timeout, 6 s by default, then a new assignment), or PostgreSQL coming
# back (retries back off to 5 s), with room for a loaded 2-core machine. Waits fail on this, not
# on a total time: a slow machine stores rows more slowly, a stuck worker stores none.
QUIET_S = 60.0


def wait_for_rows(
    url: str,
    target: int,
    what: str,
    *,
    quiet_s: float = QUIET_S,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
    interval: float = 0.2,
) -> None:
    """Wait until raw_events + dead_letters hold ``target`` rows. Fails when ``quiet_s`` pass
    without a new row (the worker is stuck), or at once when ``alive()`` turns false; the
    failure quotes the end of the worker's ``log``."""
    stored = sum(counts(url))
    last_change = time.monotonic()
    while stored < target:
        if alive is not None and not alive():
            raise AssertionError(
                f"the worker exited while waiting for {what} ({stored} rows){_tail(log)}"
            )
        if time.monotonic() - last_change > quiet_s:
            raise AssertionError(
                f"no new row in {quiet_s:.0f} s while waiting for {what} ({stored} rows)"
                f"{_tail(log)}"
            )
        time.sleep(interval)
        now = sum(counts(url))
        if now != stored:
            stored, last_change = now, time.monotonic()


def wait_for_totals(
    url: str,
    good: int,
    bad: int,
    *,
    quiet_s: float = QUIET_S,
    alive: Callable[[], bool] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until as many rows as messages were produced are stored.

    Reaching the totals proves nothing by itself: a duplicate can stand in for a missing row.
    Callers stop every worker, then call :func:`assert_exactly_once`, which counts distinct
    offsets and sequence numbers once nothing can write any more, so no duplicate lands after
    the check."""
    what = f"{good} rows + {bad} dead letters"
    wait_for_rows(url, good + bad, what, quiet_s=quiet_s, alive=alive, log=log)


def _tail(log: Path | None, lines: int = 40) -> str:
    if log is None or not log.exists():
        return ""
    return "; the worker's log ends:\n" + "\n".join(log.read_text().splitlines()[-lines:])


def assert_exactly_once(url: str, good: int, bad: int) -> None:
    """Every message stored once: rows, distinct offsets and distinct sequence numbers all equal
    the numbers produced. Call it after the workers stopped (see :func:`wait_for_totals`)."""
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
    """The environment of an `rtmh worker` subprocess: this test's settings as ``up`` hands
    settings to its children (``Settings.to_env``), then ``extra`` variables on top."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    settings = settings_for(url, bootstrap, prefix, batch_max_messages=5000)
    return {**base, **settings.to_env(), **extra}


def running(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """For waits: a worker that exited stores nothing more, so the wait fails at once."""
    return lambda: proc.poll() is None


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
    cfg = settings_for(url, bootstrap, prefix, **settings)
    with in_thread(build_worker(cfg, url, bootstrap)) as worker:
        yield worker


def settings_for(url: str, bootstrap: str, prefix: str, **settings: object) -> Settings:
    """Settings of a worker of this test's own: its topics and its consumer group."""
    return load_settings(
        postgres_url=url,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        group_id=f"g-{prefix}",
        **settings,
    )


@contextmanager
def in_thread(worker: Worker) -> Iterator[Worker]:
    """``worker`` on a thread of its own until the block ends; it must stop when asked."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "the worker did not stop"
