"""metrics_agg equals a brute-force recomputation from raw_events (issue 4, "Checked by").

Real path only: messages go to the broker, a real worker (small batches, so many batches merge
into the same windows) writes raw_events and merges window partials into metrics_agg, and
``windows_oracle`` recomputes every window from the stored raw_events without rtmh.windows.
Event sets are random (hypothesis): out of order, late (older than the live windows), flagged out
of range, on and just below window boundaries, metric values from subnormal to beyond the
sketch's range. A second test kills the worker with SIGKILL mid-run and restarts it: replayed
batches must not count any window twice.
"""

from __future__ import annotations

import math
import random
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rtmh.bench.windows_oracle import GLOBAL_KEY, assert_windows_match
from rtmh.embedded.postgres import EmbeddedPostgres
from rtmh.kafka.client import ensure_topics, make_producer, produce_waiting

from ..conftest import TEMPLATE, drop_test_database, new_test_database
from .ingest_support import (
    KINDS,
    assert_exactly_once,
    counts,
    running,
    start_worker,
    wait_for_rows,
    wait_for_totals,
    worker_env,
    worker_thread,
)

Message = tuple[str, str, bytes]  # (kind, key, value)

SERVICES = ("api", "db", "web", GLOBAL_KEY)  # a service named like the global key: one row


@contextmanager
def fresh_database(server: EmbeddedPostgres) -> Iterator[str]:
    """A migrated database of its own for one hypothesis example."""
    name = new_test_database(server, TEMPLATE)
    try:
        yield server.admin_url(name)
    finally:
        drop_test_database(server, name)


def produce_all(bootstrap: str, prefix: str, messages: list[Message], partitions: int) -> None:
    ensure_topics(bootstrap, [prefix + k for k in KINDS], partitions)
    producer = make_producer(bootstrap)
    for kind, key, value in messages:
        produce_waiting(producer, prefix + kind, value, key.encode())
    assert producer.flush(60) == 0


def dead_letter_reasons(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r for (r,) in conn.execute("SELECT reason FROM dead_letters LIMIT 5")]


# --- random event sets --------------------------------------------------------------------------

# When an event happened, relative to the example's "now" (resolved at run time):
#   ("rel", s)        now + s, near the live windows
#   ("late", s)       now + s, tens of minutes to hours ago: windows long closed
#   ("edge", k, d)    the k-th slide boundary before now, moved by d ("below" = the float just
#                     under it, which rounds up to the boundary at microsecond precision)
#   ("ancient",)      a year ago: out of range, stored with the broker time and not windowed
#   ("future",)       two hours ahead: likewise
#   ("none",)         no timestamp: the broker time
WHENS = st.one_of(
    st.tuples(st.just("rel"), st.floats(-240.0, 20.0)),
    st.tuples(st.just("late"), st.floats(-7200.0, -600.0)),
    st.tuples(
        st.just("edge"),
        st.integers(0, 20),
        st.sampled_from([0.0, -1e-6, 1e-6, -5e-7, "below"]),
    ),
    st.sampled_from([("ancient",), ("future",), ("none",)]),
)
# How the timestamp is written (decode accepts all of these)
TS_FORMATS = st.sampled_from(["seconds", "seconds", "millis", "rfc3339"])

VALUES = st.one_of(
    st.floats(-1e6, 1e6),
    st.integers(-(10**6), 10**6),
    st.sampled_from(
        [0.0, -0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1e-300, -1e-300, 1e300, -1e300]
    ),
    # anything up to the ±1e300 decode accepts (beyond it: dead letters, see
    # test_metric_values_beyond_summable_range_are_dead_lettered_not_fatal)
    st.floats(-1e300, 1e300),
)
LEVELS = st.sampled_from(
    ["info", "error", "ERROR", "warn", "fatal", "Critical", "debug", "E", "bogus", 50, 3, None]
)
METRIC_NAMES = st.sampled_from(["latency_ms", "queue_depth", "error_rate", "log_count"])

EVENT = st.one_of(
    st.fixed_dictionaries({"kind": st.just("logs"), "level": LEVELS}),
    st.fixed_dictionaries({"kind": st.just("metrics"), "name": METRIC_NAMES, "value": VALUES}),
    st.fixed_dictionaries(
        {
            "kind": st.just("telegraf"),
            # "log" + field "count" -> "log_count", which must not merge with the built-in type
            "name": st.sampled_from(["cpu", "log"]),
            "fields": st.dictionaries(
                st.sampled_from(["usage", "count", "rate"]),
                st.one_of(VALUES, st.booleans(), st.just("text")),
                min_size=1,
            ),
        }
    ),
    st.fixed_dictionaries(
        {"kind": st.just("events"), "type": st.sampled_from(["deploy", "restart"])}
    ),
)


@st.composite
def event_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = {
        "service": draw(st.sampled_from(SERVICES)),
        "when": draw(WHENS),
        "fmt": draw(TS_FORMATS),
    }
    spec.update(draw(EVENT))
    return spec


EVENTS = st.lists(event_specs(), min_size=1, max_size=120)
SHAPES = st.sampled_from([(60, 10), (30, 5), (20, 20)])


def event_time(when: tuple[Any, ...], now: float, slide: int) -> float | None:
    tag = when[0]
    if tag in ("rel", "late"):
        return now + when[1]
    if tag == "edge":
        boundary = float(math.floor(now) - math.floor(now) % slide - when[1] * slide)
        delta = when[2]
        return math.nextafter(boundary, 0.0) if delta == "below" else boundary + delta
    if tag == "ancient":
        return now - 400 * 86400
    if tag == "future":
        return now + 7200
    return None


def encode_ts(t: float, fmt: str) -> object:
    if fmt == "millis":
        return round(t * 1000)
    if fmt == "rfc3339":
        return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
    return t


def to_message(seq: int, spec: dict[str, Any], now: float, slide: int) -> Message:
    body: dict[str, Any] = {"seq": seq}
    t = event_time(spec["when"], now, slide)
    if t is not None:
        # the boundary cases only make sense as exact floats
        body["ts"] = t if spec["when"][0] == "edge" else encode_ts(t, spec["fmt"])
    kind = spec["kind"]
    service = spec["service"]
    if kind == "telegraf":
        kind = "metrics"
        body.update(name=spec["name"], fields=spec["fields"], tags={"service": service})
        if not any(not isinstance(v, str) for v in spec["fields"].values()):
            body["fields"] = {**spec["fields"], "n": 1}  # at least one numeric field
    else:
        body["service"] = service
        if kind == "logs":
            body["msg"] = f"line {seq}"
            if spec["level"] is not None:
                body["level"] = spec["level"]
        elif kind == "metrics":
            body.update(name=spec["name"], value=spec["value"])
        else:
            body["type"] = spec["type"]
    return kind, service, msgspec.json.encode(body)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # an example costs seconds (a database, topics, a worker joining its group): shrinking would
    # take minutes, so a failure is reported as found, with the blob to reproduce it
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    print_blob=True,
)
@given(specs=EVENTS, shape=SHAPES)
def test_metrics_agg_equals_a_recomputation_from_raw_events(
    pg_server: EmbeddedPostgres,
    broker: str,
    specs: list[dict[str, Any]],
    shape: tuple[int, int],
) -> None:
    size, slide = shape
    prefix = f"p{uuid.uuid4().hex[:10]}."
    now = time.time()
    messages = [to_message(seq, spec, now, slide) for seq, spec in enumerate(specs)]
    with fresh_database(pg_server) as url:
        produce_all(broker, prefix, messages, partitions=2)
        with worker_thread(
            url,
            broker,
            prefix,
            batch_max_messages=7,
            batch_max_ms=50,
            window_size_s=size,
            window_slide_s=slide,
        ):
            wait_for_rows(url, len(messages), f"{len(messages)} rows")
        assert counts(url) == (len(messages), 0), dead_letter_reasons(url)
        assert_windows_match(url, prefix, size, slide)


# --- duplicates across a SIGKILL + restart ------------------------------------------------------

KILL_TOTAL = 30_000


def steady_traffic(now: float, total: int) -> list[Message]:
    """Four minutes of event time from 6 services, roughly in order with jitter; 5 % arrive one
    to three minutes late; a few out of range."""
    rng = random.Random(4)
    start = now - 250
    messages: list[Message] = []
    for seq in range(total):
        t = start + 240 * seq / total + rng.gauss(0, 2)
        if rng.random() < 0.05:
            t -= rng.uniform(60, 180)
        if seq % 997 == 0:
            t = now - 400 * 86400
        service = f"svc{rng.randrange(6)}"
        body: dict[str, Any] = {"ts": round(t, 6), "service": service, "seq": seq}
        kind = KINDS[seq % 3]
        if kind == "logs":
            body.update(level="error" if rng.random() < 0.1 else "info", msg=f"line {seq}")
        elif kind == "metrics":
            roll = rng.random()
            value = rng.lognormvariate(3, 1.5) if roll < 0.9 else -rng.uniform(0, 50)
            body.update(name=rng.choice(["latency_ms", "queue_depth"]), value=value)
        else:
            body["type"] = "deploy"
        messages.append((kind, service, msgspec.json.encode(body)))
    return messages


def test_windows_count_nothing_twice_across_sigkill_and_restart(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    produce_all(broker, topic_prefix, steady_traffic(time.time(), KILL_TOTAL), partitions=4)
    env = worker_env(db_url, broker, topic_prefix)
    env.update(RTMH_BATCH_MAX_MESSAGES="300", RTMH_BATCH_MAX_MS="100")
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        wait_for_rows(db_url, KILL_TOTAL // 3, "a third of the rows", alive=running(proc))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed_at = counts(db_url)[0]
    assert killed_at < KILL_TOTAL, "the worker finished before it could be killed"
    proc = start_worker(env, log)
    try:
        wait_for_totals(db_url, KILL_TOTAL, 0, alive=running(proc))
    finally:
        proc.terminate()
        proc.wait(30)
    assert_exactly_once(db_url, KILL_TOTAL, 0)
    compared = assert_windows_match(db_url, topic_prefix, 60, 10)
    assert compared > 500


# --- sums beyond the float range ------------------------------------------------------------------


def test_metric_values_beyond_summable_range_are_dead_lettered_not_fatal(
    db_url: str, broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    # 14 samples of 2e307 in one window, 7 per batch: each batch's partial sum (1.4e308) is
    # finite, the window's total would not be, and float8 addition in the SQL merge would raise.
    # Such values are refused at decode (|value| > 1e300) with a reason, and the worker goes on.
    now = time.time()
    spec = {"service": "api", "when": ("rel", -5.0), "fmt": "seconds", "kind": "metrics"}
    messages = [
        to_message(seq, {**spec, "name": "bytes", "value": 2e307}, now, 10) for seq in range(14)
    ]
    messages.append(to_message(99, {**spec, "name": "bytes", "value": 1e300}, now, 10))
    produce_all(broker, topic_prefix, messages, partitions=1)
    env = worker_env(db_url, broker, topic_prefix)
    env.update(RTMH_BATCH_MAX_MESSAGES="7", RTMH_BATCH_MAX_MS="1000")
    proc = start_worker(env, tmp_path / "worker.log")
    try:
        wait_for_rows(db_url, len(messages), "all messages", alive=running(proc))
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
    finally:
        proc.terminate()
        proc.wait(30)
    assert counts(db_url) == (1, 14)
    with psycopg.connect(db_url) as conn:
        reasons = {r[0] for r in conn.execute("SELECT reason FROM dead_letters")}
    assert len(reasons) == 1 and "1e300" in reasons.pop()
    assert_windows_match(db_url, topic_prefix, 60, 10)
