"""The ingest worker against a real broker and PostgreSQL: nothing lost, nothing duplicated."""

from __future__ import annotations

import signal
from pathlib import Path

import psycopg
import pytest

from rtmh.db.migrate import apply_pending
from rtmh.embedded.broker import EmbeddedBroker
from rtmh.embedded.postgres import EmbeddedPostgres

from .ingest_support import (
    BAD_MESSAGES,
    assert_exactly_once,
    counts,
    port_is_free,
    produce,
    running,
    start_worker,
    wait_for,
    wait_for_rows,
    wait_for_totals,
    worker_env,
    worker_thread,
)


def test_every_kind_of_bad_message_is_dead_lettered_with_its_bytes(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    from rtmh.kafka.client import ensure_topics, make_producer

    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 1)
    producer = make_producer(broker, **{"message.max.bytes": 4_000_000})
    oversized = b'{"service": "api", "msg": "' + b"x" * 1_100_000 + b'"}'
    beyond_numeric = b'{"service": "api", "msg": "x", "big": 1e999999}'  # jsonb refuses it
    bad = [
        *BAD_MESSAGES,
        oversized,
        b'{"service": "api", "name": "x", "value": "high"}',
        beyond_numeric,
    ]
    for value in bad:
        topic = "metrics" if b'"name"' in value else "logs"
        producer.produce(topic_prefix + topic, value=value, key=b"k")
    producer.produce(topic_prefix + "logs", value=None, key=b"tombstone")
    producer.produce(topic_prefix + "logs", value=b'{"service": "api", "msg": "fine"}')
    assert producer.flush(30) == 0
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: sum(counts(db_url)) == len(bad) + 2, 60, "all messages")
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT payload, reason FROM dead_letters ORDER BY topic, kafka_offset"
        ).fetchall()
        assert conn.execute("SELECT data->>'msg' FROM raw_events").fetchall() == [("fine",)]
    assert len(rows) == len(bad) + 1 >= 16
    stored = {bytes(p) if p is not None else None for p, _ in rows}
    assert stored == {*bad, None}
    reasons = [r for _, r in rows]
    assert all(r and len(r) < 400 for r in reasons)
    assert len(set(reasons)) >= 12, reasons  # readable, specific reasons, not one generic line
    joined = " ".join(reasons).lower()
    for fragment in ("json", "utf-8", "service", "limit", "\\u0000", "postgresql refused"):
        assert fragment in joined, fragment


def test_sigkill_twice_during_200k_messages_loses_and_duplicates_nothing(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    good, bad = produce(broker, topic_prefix, 200_000, bad_every=100)
    env = worker_env(db_url, broker, topic_prefix)
    log = tmp_path / "worker.log"
    for threshold in (30_000, 110_000):
        proc = start_worker(env, log)
        wait_for_rows(db_url, threshold, f"{threshold} rows", alive=running(proc))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = start_worker(env, log)
    try:
        wait_for_totals(db_url, good, bad, alive=running(proc))
    finally:
        proc.terminate()
        proc.wait(30)
    assert_exactly_once(db_url, good, bad)
    assert bad == 2000


def test_postgres_restart_mid_run(broker: str, topic_prefix: str, tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True) as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            apply_pending(conn)
        good, bad = produce(broker, topic_prefix, 120_000, bad_every=100)
        log = tmp_path / "worker.log"
        proc = start_worker(worker_env(pg.url, broker, topic_prefix), log)
        try:
            wait_for_rows(pg.url, 20_000, "20k rows", alive=running(proc))
            port = pg.port
            assert port is not None
            pg.stop()
            wait_for(
                lambda: "unavailable during" in log.read_text() or proc.poll() is not None,
                60,
                "the worker to find PostgreSQL gone",
            )
            assert proc.poll() is None, "the worker must wait for PostgreSQL, not exit"
            wait_for(lambda: port_is_free(port), 30, f"port {port} free")
            pg.port = port
            pg.start()
            assert pg.port == port, "PostgreSQL must come back where the worker looks for it"
            wait_for_totals(pg.url, good, bad, alive=running(proc), log=log)
        finally:
            proc.terminate()
            proc.wait(30)
        assert_exactly_once(pg.url, good, bad)


def test_broker_restart_is_detected_and_new_log_consumed(
    db_url: str, topic_prefix: str, tmp_path: Path
) -> None:
    server = EmbeddedBroker(tmp_path / "broker")
    bootstrap = server.start()
    log = tmp_path / "worker.log"
    proc = start_worker(worker_env(db_url, bootstrap, topic_prefix), log)
    try:
        first_good, _ = produce(bootstrap, topic_prefix, 9_000)
        wait_for_totals(db_url, first_good, 0, alive=running(proc), log=log)
        port = server.port
        assert port is not None
        server.stop()  # the memory broker forgets topics, offsets and groups
        wait_for(lambda: port_is_free(port), 30, f"port {port} free")
        server.port = port
        assert server.start() == bootstrap, "the broker must come back on the same port"
        # fewer messages than before: a worker seeking to its stored offsets would see nothing
        second_good, _ = produce(bootstrap, topic_prefix, 3_000, start_seq=100_000)
        # no total budget: the worker first has to find the reset (a session timeout and a new
        # assignment), then store 3,000 rows; it fails when it stores nothing for QUIET_S
        wait_for_totals(db_url, first_good + second_good, 0, alive=running(proc), log=log)
    finally:
        proc.terminate()
        proc.wait(30)
    assert_exactly_once(db_url, first_good + second_good, 0)
    with psycopg.connect(db_url) as conn:
        new_rows = conn.execute(
            "SELECT count(*) FROM raw_events WHERE generation = 1 AND (data->>'seq')::int >= 100000"
        ).fetchone()
    assert new_rows == (second_good,)
    # found reset by the topic id, by the topic's absence, or by reading back: all say so
    assert "from its earliest offset as generation 1" in log.read_text()


def test_two_workers_split_partitions_and_survive_a_sigkill(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    env = worker_env(db_url, broker, topic_prefix, RTMH_BATCH_MAX_MESSAGES="2000")
    good, bad = produce(broker, topic_prefix, 3_000, bad_every=100)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start_worker(env, logs[0])
    b = start_worker(env, logs[1])
    try:
        wait_for_totals(db_url, good, bad)
        wait_for(
            lambda: all("assigned " in p.read_text() and "@" in p.read_text() for p in logs),
            30,
            "both workers assigned",
        )
        more_good, more_bad = produce(
            broker, topic_prefix, 150_000, bad_every=100, start_seq=10_000
        )
        wait_for_rows(db_url, good + bad + 20_000, "progress", alive=running(a))
        a.send_signal(signal.SIGKILL)
        a.wait()
        wait_for_totals(db_url, good + more_good, bad + more_bad)
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    assert_exactly_once(db_url, good + more_good, bad + more_bad)


def test_sigterm_commits_and_leaves_the_group(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    good, bad = produce(broker, topic_prefix, 60_000, bad_every=100)
    env = worker_env(db_url, broker, topic_prefix)
    proc = start_worker(env, tmp_path / "w1.log")
    wait_for_rows(db_url, 10_000, "10k rows", alive=running(proc))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = (tmp_path / "w1.log").read_text()
    assert "SIGTERM received" in text and "worker stopped" in text
    successor = start_worker(env, tmp_path / "w2.log")
    try:
        wait_for_totals(db_url, good, bad, alive=running(successor))
    finally:
        successor.terminate()
        successor.wait(30)
    assert_exactly_once(db_url, good, bad)


@pytest.mark.parametrize("kind", ["telegraf", "ecs", "fluentbit"])
def test_shippers_shapes_are_stored_with_normalised_columns(
    db_url: str, broker: str, topic_prefix: str, kind: str
) -> None:
    from rtmh.kafka.client import ensure_topics, make_producer

    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 1)
    messages = {
        "telegraf": (
            "metrics",
            b'{"name": "cpu", "fields": {"usage_user": 12.5}, '
            b'"tags": {"host": "web-1", "service": "shop"}, "timestamp": 1767225600}',
        ),
        "ecs": (
            "logs",
            b'{"@timestamp": "2026-01-01T00:00:00.000Z", "log": {"level": "ERROR"},'
            b' "message": "db down", "service": {"name": "shop"}, "host": {"name": "web-1"}}',
        ),
        "fluentbit": (
            "logs",
            b'{"time": "2026-01-01T00:00:00Z", "log.level": "warning", '
            b'"log": "slow", "service.name": "shop", "host.name": "web-1"}',
        ),
    }
    topic, value = messages[kind]
    producer = make_producer(broker)
    producer.produce(topic_prefix + topic, value=value)
    assert producer.flush(10) == 0
    with worker_thread(db_url, broker, topic_prefix):
        wait_for(lambda: counts(db_url)[0] == 1, 60, "the row")
    assert counts(db_url) == (1, 0), "the worker has stopped: one row, stored once"
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT service, host, level, data::text = %s::jsonb::text FROM raw_events",
            (value.decode(),),
        ).fetchone()
    assert row is not None
    assert row[:2] == ("shop", "web-1")
    assert row[3] is True  # data is the message as received
    assert row[2] == {"telegraf": None, "ecs": "error", "fluentbit": "warn"}[kind]
