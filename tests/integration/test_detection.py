"""End to end with the real broker and PostgreSQL: traffic in, incidents opened and resolved."""

from __future__ import annotations

import threading
import time

import psycopg

from rtmh import simulate as sim
from rtmh.kafka.client import ensure_topics, make_producer

from .ingest_support import wait_for, worker_thread


def _traffic(
    bootstrap: str,
    prefix: str,
    plan: sim.Scenario,
    services: tuple[str, ...],
    rate: float,
    duration: float,
) -> threading.Thread:
    producer = make_producer(bootstrap)

    def produce(kind: str, key: bytes, value: bytes) -> None:
        producer.produce(prefix + kind, key=key, value=value)

    def run() -> None:
        sim.run(
            produce, lambda: producer.poll(0), sim.Traffic(plan, services, seed=7), rate, duration
        )
        producer.flush(10)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _incidents(url: str) -> list[tuple[str, str, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT source, window_key, status, id::text FROM incidents ORDER BY created_at"
        ).fetchall()


def test_error_burst_opens_one_incident_that_resolves_and_silence_is_noticed(
    db_url: str, broker: str, topic_prefix: str
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alert_rules SET enabled = name IN ('high_error_rate', 'service_silent')"
        )
        conn.execute("UPDATE alert_rules SET resolve_after_seconds = 3")
        conn.execute("UPDATE alert_rules SET channels = '{demo-webhook}'")
        conn.execute("UPDATE alert_rules SET no_data_seconds = 6 WHERE name = 'service_silent'")
    ensure_topics(broker, [topic_prefix + k for k in ("logs", "metrics", "events")], 4)
    # healthy services err at 0.1 %: at 0.5 %, three unlucky errors in a fresh 50-line window
    # of payments or search would open a (correct, but unwanted here) incident now and then
    burst = sim.Scenario(
        "test",
        "checkout bursts",
        phases=(sim.Phase(6, 12, "checkout", error_ratio=0.5),),
        base_error_ratio=0.001,
    )
    # the traffic's clock starts after this: the burst runs from no earlier than started + 6 s
    # to no earlier than started + 12 s
    started = time.time()
    noisy = _traffic(broker, topic_prefix, burst, ("checkout", "payments", "search"), 1500, 45)
    quiet = _traffic(broker, topic_prefix, burst, ("auth",), 300, 12)
    with worker_thread(db_url, broker, topic_prefix, window_size_s=10, window_slide_s=2):
        wait_for(
            lambda: any(s == "error_rate_monitor" for s, *_ in _incidents(db_url)),
            30,
            "the error-rate incident",
        )
        wait_for(
            lambda: any(s == "no_data_monitor" and k == "auth" for s, k, *_ in _incidents(db_url)),
            40,
            "the no-data incident for auth",
        )
        wait_for(
            lambda: all(
                st == "resolved" for s, _, st, _ in _incidents(db_url) if s == "error_rate_monitor"
            ),
            45,
            "the error-rate incident to resolve",
        )
        noisy.join(60)
        quiet.join(5)
    incidents = _incidents(db_url)
    error_rate = [(k, st) for s, k, st, _ in incidents if s == "error_rate_monitor"]
    assert error_rate == [("checkout", "resolved")], incidents
    with psycopg.connect(db_url) as conn:
        inc_id = next(i for s, _, _, i in incidents if s == "error_rate_monitor")
        opened_at, resolved_at = conn.execute(
            "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM resolved_at)::float8"
            " FROM incidents WHERE id = %s",
            (inc_id,),
        ).fetchone() or (None, None)
        events = [
            r[0]
            for r in conn.execute(
                "SELECT event_type FROM incident_events WHERE incident_id = %s ORDER BY id",
                (inc_id,),
            )
        ]
        meta = conn.execute("SELECT metadata FROM incidents WHERE id = %s", (inc_id,)).fetchone()
        notes = conn.execute(
            "SELECT channel, event, status FROM alert_notifications WHERE incident_id = %s"
            " ORDER BY id",
            (inc_id,),
        ).fetchall()
    assert events[0] == "opened" and "resolved" in events
    # opened by the burst, not before it; resolved once it was over, not while it ran
    assert opened_at is not None and opened_at >= started + 6, (opened_at, started)
    assert resolved_at is not None and resolved_at >= started + 12, (resolved_at, started)
    assert meta is not None
    trigger = meta[0]["trigger"]
    assert trigger["value"] > trigger["threshold"] == 0.05
    assert trigger["window"]["count"] >= 20
    assert meta[0]["recent_errors"], "the incident carries the service's recent error lines"
    sent = [e for c, e, _ in notes if c == "demo-webhook"]
    # open once, resolve once; in between only 'update' when the peak grew by half or more
    assert sent[0] == "open" and sent[-1] == "resolve" and sent.count("resolve") == 1, sent
    assert set(sent[1:-1]) <= {"update"} and len(sent) <= 5, sent
