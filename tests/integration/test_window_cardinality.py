"""A flood of distinct services (a request id in `service`) against a real broker and PostgreSQL:
every event is stored with its service, the windows open at most the bound's keys and count the
rest under __other__, exactly, and the fold is counted and logged (issue 15)."""

from __future__ import annotations

import logging
import re
import socket
import time
import urllib.request
from pathlib import Path

import msgspec
import psycopg
import pytest

from rtmh.bench.windows_oracle import compare, expected_windows, load_agg, load_raw
from rtmh.ingest import metrics
from rtmh.kafka.client import ensure_topics, make_producer, produce_waiting
from rtmh.records import GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY
from rtmh.windows.cardinality import KeyGuard, Limits
from rtmh.worker import build_worker

from .ingest_support import (
    KINDS,
    counts,
    in_thread,
    running,
    settings_for,
    start_worker,
    wait_for,
    wait_for_rows,
    worker_env,
)

STEADY = ("checkout", "payments", "search")
FLOOD = 5_000


def steady_messages(count: int, start: int) -> list[tuple[str, str, bytes]]:
    now = time.time()
    out = []
    for i in range(start, start + count):
        service, kind = STEADY[i % 3], KINDS[i // 3 % 3]
        body: dict[str, object] = {"ts": now, "service": service, "seq": i}
        if kind == "logs":
            body |= {"level": "error" if i % 7 == 0 else "info", "msg": "GET /"}
        elif kind == "metrics":
            body |= {"name": "latency_ms", "value": float(i % 90)}
        else:
            body |= {"type": "deploy"}
        out.append((kind, service, msgspec.json.encode(body)))
    return out


def flood_messages(count: int) -> list[tuple[str, str, bytes]]:
    now = time.time()
    return [
        (
            "logs",
            service := f"req-{i:08x}",
            msgspec.json.encode({"ts": now, "service": service, "level": "info", "msg": "x"}),
        )
        for i in range(count)
    ]


def produce(broker: str, prefix: str, messages: list[tuple[str, str, bytes]]) -> None:
    ensure_topics(broker, [prefix + k for k in KINDS], 4)
    producer = make_producer(broker)
    for kind, service, value in messages:
        produce_waiting(producer, prefix + kind, value, service.encode())
    assert producer.flush(60) == 0


def window_keys_and_services(url: str) -> tuple[set[str], int, int]:
    """metrics_agg's keys; raw_events' rows and distinct services."""
    with psycopg.connect(url) as conn:
        keys = {k for (k,) in conn.execute("SELECT DISTINCT window_key FROM metrics_agg")}
        row = conn.execute("SELECT count(*), count(DISTINCT service) FROM raw_events").fetchone()
    assert row is not None
    return keys, int(row[0]), int(row[1])


def folded_records(url: str) -> int:
    """raw_events rows whose service has no window of its own: each flood service sends one
    line, so it was folded or admitted whole."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM raw_events r WHERE NOT EXISTS "
            "(SELECT 1 FROM metrics_agg m WHERE m.window_key = r.service)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_flood_is_stored_whole_and_windowed_within_the_bound(
    db_url: str, broker: str, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = settings_for(db_url, broker, topic_prefix, batch_max_messages=1000)
    start = time.time()
    # one minute throughout, whatever the machine's speed: the per-minute bound is exact
    guard = KeyGuard(Limits(per_batch=100, per_minute=250), clock=lambda: start)
    folded_before = metrics.WINDOW_KEYS_FOLDED._value.get()
    worker = build_worker(cfg, db_url, broker, rules=False, guard=guard)
    steady = steady_messages(300, 0)
    with caplog.at_level(logging.WARNING, logger="rtmh.windows.cardinality"), in_thread(worker):
        produce(broker, topic_prefix, steady)
        wait_for_rows(db_url, len(steady), "the steady services")
        # the flood, with the steady services still talking through it (at most 1000 records
        # a batch: at least five batches of it)
        mixed = flood_messages(FLOOD)
        for i, message in enumerate(steady_messages(300, 300)):
            mixed.insert(i * FLOOD // 300, message)
        produce(broker, topic_prefix, mixed)
        total = len(steady) + len(mixed)
        wait_for_rows(db_url, total, "the flood")
        folded = folded_records(db_url)
        wait_for(
            lambda: metrics.WINDOW_KEYS_FOLDED._value.get() - folded_before == folded,
            60,
            f"rtmh_window_keys_folded_total to count {folded} records",
        )

    keys, rows, services = window_keys_and_services(db_url)
    assert (rows, services) == (total, FLOOD + len(STEADY)), "raw_events keeps every service"
    assert sum(counts(db_url)) == total
    service_keys = keys - {GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY}
    assert OTHER_WINDOW_KEY in keys
    # the steady services were known: never folded; new keys filled the minute's places
    assert set(STEADY) <= service_keys
    assert len(service_keys) == 250
    assert folded == FLOOD - (250 - len(STEADY))

    # exact: admitted keys and __all__ as if nothing was folded, __other__ = the folded ones
    with psycopg.connect(db_url) as conn:
        raw = load_raw(conn, topic_prefix)
        actual = load_agg(conn)
    for row in raw:
        if row.service not in service_keys:
            row.service = OTHER_WINDOW_KEY
    expected = expected_windows(raw, cfg.window_size_s, cfg.window_slide_s)
    problems = compare(expected, actual, cfg.window_size_s)
    assert not problems, problems[:10]

    warnings = [r.getMessage() for r in caplog.records if r.name == "rtmh.windows.cardinality"]
    assert len(warnings) == 1, warnings  # one minute: one warning
    assert "RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH=100" in warnings[0]
    assert "req-" in warnings[0] and OTHER_WINDOW_KEY in warnings[0]


def test_a_restarted_worker_folds_no_service_metrics_agg_holds(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    services = [f"svc{i:02d}" for i in range(30)]
    now = time.time()

    def round_of(names: list[str], seq: int) -> list[tuple[str, str, bytes]]:
        body = {"ts": now, "level": "info", "msg": "x", "seq": seq}
        return [("logs", s, msgspec.json.encode({**body, "service": s})) for s in names]

    cfg = settings_for(db_url, broker, topic_prefix)
    first = round_of(services, 0)
    produce(broker, topic_prefix, first)
    with in_thread(build_worker(cfg, db_url, broker, rules=False)):
        wait_for_rows(db_url, len(first), "the first round")
    # a new worker remembers nothing, and its budget takes 5 new keys a batch: the 30 services
    # must be found in metrics_agg, and only the 20 new ones compete for the budget
    guard = KeyGuard(Limits(per_batch=5, per_minute=1000), clock=lambda: now)
    new = [f"new{i:02d}" for i in range(20)]
    second = round_of(services, 1) + round_of(new, 1)
    produce(broker, topic_prefix, second)
    with in_thread(build_worker(cfg, db_url, broker, rules=False, guard=guard)):
        wait_for_rows(db_url, len(first) + len(second), "the second round")
    keys, _, _ = window_keys_and_services(db_url)
    assert set(services) <= keys
    assert OTHER_WINDOW_KEY in keys and len(set(new) & keys) < len(new)
    with psycopg.connect(db_url) as conn:
        raw = load_raw(conn, topic_prefix)
        actual = load_agg(conn)
    for row in raw:
        if row.service not in keys:
            row.service = OTHER_WINDOW_KEY
    expected = expected_windows(raw, cfg.window_size_s, cfg.window_slide_s)
    problems = compare(expected, actual, cfg.window_size_s)
    assert not problems, problems[:10]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scraped_folded(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^rtmh_window_keys_folded_total (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else -1.0


def test_rtmh_worker_reads_the_bound_from_its_environment(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    port = free_port()
    env = worker_env(
        db_url,
        broker,
        topic_prefix,
        RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH="50",
        RTMH_WINDOW_MAX_KEYS_PER_MINUTE="100",
        RTMH_METRICS_PORT=str(port),
    )
    log = tmp_path / "worker.log"
    flood = flood_messages(2_000)
    produce(broker, topic_prefix, flood)
    proc = start_worker(env, log)
    try:
        wait_for_rows(db_url, len(flood), "the flood", alive=running(proc), log=log)
        folded = folded_records(db_url)
        wait_for(lambda: scraped_folded(port) == folded, 60, f"/metrics to count {folded}")
    finally:
        proc.terminate()
        proc.wait(60)
    keys, rows, services = window_keys_and_services(db_url)
    assert rows == services == len(flood)
    service_keys = keys - {GLOBAL_WINDOW_KEY, OTHER_WINDOW_KEY}
    # 100 a minute, and last minute's keys hold their places in the next one: even a run that
    # crossed two minute boundaries admits no more than 200
    assert 0 < len(service_keys) <= 200
    assert folded == len(flood) - len(service_keys) > 0
    text = log.read_text()
    assert "window keys over the bound" in text and "RTMH_WINDOW_MAX_" in text
