"""The SQL of migrations 003 and 010 agrees with rtmh.windows in Python, on a real PostgreSQL.

The sketch merge and quantile estimate, the value formula per metric type, and the worker's
merge (rtmh.windows.store.merge_partials: the plain columns upserted in SQL, the sketches merged
in Python under the rows' locks) batch by batch against build_partials over the whole input.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.types.json import Jsonb

from rtmh.records import DecodedRecord, HistogramSample, Kind, MetricSample
from rtmh.windows.partials import (
    Partial,
    PartialKey,
    build_partials,
    mode_for,
    value_of,
)
from rtmh.windows.sketch import GAMMA, MAX_BUCKETS, Sketch
from rtmh.windows.store import merge_partials

REL = 1e-12


@pytest.fixture
def conn(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db_url, autocommit=True) as connection:
        yield connection


def close(got: float | None, expected: float | None) -> bool:
    """Equal up to floating error, NULL only where Python has None."""
    if expected is None or got is None:
        return got is expected
    return got == pytest.approx(expected, rel=REL, abs=0.0)


def random_sketch(rng: random.Random, n: int) -> Sketch:
    sketch = Sketch()
    for _ in range(n):
        roll = rng.random()
        if roll < 0.05:
            sketch.add(0.0)
        elif roll < 0.2:
            sketch.add(-rng.lognormvariate(0.0, 2.0))
        else:
            sketch.add(rng.lognormvariate(3.0, 1.5))
    return sketch


def sql_scalar(conn: psycopg.Connection[Any], query: str, *params: object) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# ------------------------------------------------------------------------------ sketch functions


def test_sketch_merge_matches_python_and_is_null_safe(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(1)
    for n_a, n_b in [(0, 0), (0, 5), (7, 0), (50, 3), (400, 400), (1, 1000)]:
        a, b = random_sketch(rng, n_a), random_sketch(rng, n_b)
        expected = a.copy()
        expected.merge(b)
        got = sql_scalar(
            conn,
            "SELECT rtmh_sketch_merge(%s, %s)",
            Jsonb(a.to_json_obj()),
            Jsonb(b.to_json_obj()),
        )
        assert Sketch.from_json_obj(got) == expected
    one = Jsonb(random_sketch(rng, 10).to_json_obj())
    assert sql_scalar(conn, "SELECT rtmh_sketch_merge(NULL, NULL)") is None
    assert sql_scalar(conn, "SELECT rtmh_sketch_merge(%s, NULL) = %s", one, one)
    assert sql_scalar(conn, "SELECT rtmh_sketch_merge(NULL, %s) = %s", one, one)
    # parts missing from a hand-written object count as empty
    assert sql_scalar(conn, """SELECT rtmh_sketch_merge('{"p": {"3": 1}}', '{"z": 2}')""") == {
        "p": {"3": 1},
        "n": {},
        "z": 2,
    }


def test_the_sketch_functions_read_dense_and_sparse_stores_alike(
    conn: psycopg.Connection[Any],
) -> None:
    """Migration 010: a store is [first key, "counts"] or an object; every function answers
    the same for both (rows written before 010 keep their objects)."""
    rng = random.Random(4)
    for n in (3, 40, 2000):
        sketch = random_sketch(rng, n)
        dense = Jsonb(sketch.to_json_obj())
        sparse_obj = {
            "p": {str(k): c for k, c in sketch.pos.items()},
            "n": {str(k): c for k, c in sketch.neg.items()},
            "z": sketch.zero,
        }
        sparse = Jsonb(sparse_obj)
        if n == 2000:
            assert isinstance(sketch.to_json_obj()["p"], list)  # the case this test is for
        for name in ("p", "n"):
            got = sql_scalar(conn, f"SELECT rtmh_sketch_store(%s -> '{name}')", dense)
            assert got == sparse_obj[name]
        for q in (0.0, 0.5, 0.99, 1.0):
            assert sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, %s)", dense, q) == (
                sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, %s)", sparse, q)
            )
        assert sql_scalar(conn, "SELECT rtmh_sketch_merge(%s, %s)", dense, dense) == (
            sql_scalar(conn, "SELECT rtmh_sketch_merge(%s, %s)", sparse, sparse)
        )
    assert sql_scalar(conn, """SELECT rtmh_sketch_store('[-2, "1,0,4"]')""") == {"-2": 1, "0": 4}
    assert sql_scalar(conn, """SELECT rtmh_sketch_store('[5, "0"]')""") == {}
    assert sql_scalar(conn, "SELECT rtmh_sketch_store(NULL)") is None


def test_sketch_merge_collapses_like_python(conn: psycopg.Connection[Any]) -> None:
    low = Sketch()
    low.add_all(GAMMA ** (k - 0.5) for k in range(0, 1500))
    high = Sketch()
    high.add_all(GAMMA ** (k - 0.5) for k in range(1000, 2600))
    high.add_all(-(GAMMA ** (k - 0.5)) for k in range(0, 2100))  # the negative store folds too
    expected = low.copy()
    expected.merge(high)
    assert len(expected.pos) == MAX_BUCKETS
    got = sql_scalar(
        conn,
        "SELECT rtmh_sketch_merge(%s, %s)",
        Jsonb(low.to_json_obj()),
        Jsonb(high.to_json_obj()),
    )
    assert Sketch.from_json_obj(got) == expected
    assert len(got["p"]) == len(got["n"]) == MAX_BUCKETS


def test_sketch_quantile_matches_python(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(2)
    qs = [0.0, 0.001, 0.1, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0]
    for n in (1, 2, 3, 10, 100, 5000):
        sketch = random_sketch(rng, n)
        obj = Jsonb(sketch.to_json_obj())
        for q, expected in zip(qs, sketch.quantiles(qs), strict=True):
            got = sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, %s)", obj, q)
            assert close(got, expected), (n, q)
    zeros = Jsonb({"p": {}, "n": {}, "z": 4})
    assert sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, 0.5)", zeros) == 0.0
    for empty in (None, {"p": {}, "n": {}, "z": 0}, {}):
        arg = None if empty is None else Jsonb(empty)
        assert sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, 0.5)", arg) is None
    some = Jsonb(random_sketch(rng, 5).to_json_obj())
    for bad_q in (-0.1, 1.1, None):
        assert sql_scalar(conn, "SELECT rtmh_sketch_quantile(%s, %s)", some, bad_q) is None


def test_sketch_percentiles_match_partial(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(3)
    for n in (1, 4, 1000):
        values = [rng.lognormvariate(2.0, 1.0) for _ in range(n)]
        part = Partial("api", "lat", 0, 60, "mean")
        for value in values:
            part.observe(value)
        assert part.sketch is not None
        got = conn.execute(
            "SELECT p50, p95, p99 FROM rtmh_sketch_percentiles(%s, %s, %s)",
            (Jsonb(part.sketch.to_json_obj()), part.min, part.max),
        ).fetchone()
        assert got is not None
        assert all(close(g, e) for g, e in zip(got, part.percentiles(), strict=True))
    assert conn.execute("SELECT * FROM rtmh_sketch_percentiles(NULL, 1, 2)").fetchone() == (
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    "metric_type", ["log_count", "error_count", "error_rate", "event_count", "cpu", "metric:x"]
)
def test_value_formula_matches_python(conn: psycopg.Connection[Any], metric_type: str) -> None:
    for count, total in [(4, 1.0), (0, 0.0), (3, 7.5)]:
        mode, value = conn.execute(
            "SELECT rtmh_window_mode(%s), rtmh_window_value(%s, %s, %s)",
            (metric_type, metric_type, count, total),
        ).fetchone() or (None, None)
        assert mode == mode_for(metric_type)
        assert value == value_of(mode_for(metric_type), count, total)


# ------------------------------------------------------------------------------ staged upsert


def merge_batch(conn: psycopg.Connection[Any], partials: Mapping[PartialKey, Partial]) -> None:
    """What the worker does inside its batch transaction."""
    with conn.transaction():
        merge_partials(conn, partials)


def stored(conn: psycopg.Connection[Any]) -> dict[PartialKey, dict[str, Any]]:
    rows = conn.execute(
        "SELECT window_key, metric_type, extract(epoch FROM window_start)::bigint AS start,"
        " extract(epoch FROM window_end)::bigint AS end_, value, count, sum, min, max,"
        " p50, p95, p99, sketch FROM metrics_agg"
    ).fetchall()
    names = ("end", "value", "count", "sum", "min", "max", "p50", "p95", "p99", "sketch")
    return {(r[0], r[1], int(r[2])): dict(zip(names, r[3:], strict=True)) for r in rows}


def assert_rows_equal_partials(
    rows: Mapping[PartialKey, dict[str, Any]], partials: Mapping[PartialKey, Partial]
) -> None:
    assert set(rows) == set(partials)
    for key, part in partials.items():
        row = rows[key]
        assert row["end"] == part.window_end
        assert (row["count"], row["sum"], row["min"], row["max"]) == (
            part.count,
            part.sum,
            part.min,
            part.max,
        ), key
        assert close(row["value"], part.value), key
        for column, expected in zip(("p50", "p95", "p99"), part.percentiles(), strict=True):
            assert close(row[column], expected), (key, column)
        if part.sketch is None:
            assert row["sketch"] is None
        else:
            assert Sketch.from_json_obj(row["sketch"]) == part.sketch


def traffic(rng: random.Random, n: int, base: float = 1_700_000_000.0) -> list[DecodedRecord]:
    records: list[DecodedRecord] = []
    for _ in range(n):
        service = rng.choice(["api", "db", "web"])
        # dyadic values keep every float sum exact whatever the merge order
        t = base + rng.randrange(0, 90 * 8) / 8
        roll = rng.random()
        if roll < 0.5:
            records.append(
                DecodedRecord(
                    kind=Kind.LOGS,
                    data="{}",
                    event_time=t,
                    service=service,
                    is_error=rng.random() < 0.1,
                )
            )
        elif roll < 0.9:
            samples = (
                MetricSample("latency_ms", rng.randrange(1, 80_000) / 16),
                MetricSample("temperature", rng.randrange(-400, 400) / 4),
            )
            records.append(
                DecodedRecord(
                    kind=Kind.METRICS, data="{}", event_time=t, service=service, samples=samples
                )
            )
        else:
            records.append(
                DecodedRecord(
                    kind=Kind.EVENTS, data="{}", event_time=t, service=service, event_type="deploy"
                )
            )
    return records


def test_batches_merge_to_the_partials_of_the_whole(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(4)
    records = traffic(rng, 3000)
    cuts = sorted(rng.sample(range(1, len(records)), 4))
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        merge_batch(conn, build_partials(records[lo:hi]))
    assert_rows_equal_partials(stored(conn), build_partials(records))
    # the stage empties at commit, so a pooled connection starts the next batch clean
    assert sql_scalar(conn, "SELECT count(*) FROM window_partials_stage") == 0


def test_late_events_and_empty_batches(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(5)
    records = traffic(rng, 500)
    merge_batch(conn, build_partials(records[:400]))
    merge_batch(conn, {})
    late = traffic(rng, 50, base=1_700_000_000.0 - 3600)  # an hour late: old windows reopen
    merge_batch(conn, build_partials(records[400:] + late))
    assert_rows_equal_partials(stored(conn), build_partials(records + late))


def test_concurrent_workers_on_overlapping_windows(db_url: str) -> None:
    rng = random.Random(6)
    records = traffic(rng, 4000)
    halves = [records[0::2], records[1::2]]
    batches = [[build_partials(h[i : i + 250]) for i in range(0, len(h), 250)] for h in halves]
    errors: list[BaseException] = []

    def worker(mine: list[dict[PartialKey, Partial]]) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as own:
                for partials in mine:
                    merge_batch(own, partials)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    with psycopg.connect(db_url) as check:
        assert_rows_equal_partials(stored(check), build_partials(records))


def test_sketch_column_holds_the_python_json(conn: psycopg.Connection[Any]) -> None:
    record = DecodedRecord(
        kind=Kind.METRICS,
        data="{}",
        event_time=100.0,
        service="api",
        samples=(MetricSample("lat", 2.5), MetricSample("lat", -1.0), MetricSample("lat", 0.0)),
    )
    partials = build_partials([record], 10, 10)
    merge_batch(conn, partials)
    got = sql_scalar(
        conn, "SELECT sketch FROM metrics_agg WHERE window_key = 'api' AND metric_type = 'lat'"
    )
    sketch = partials[("api", "lat", 100)].sketch
    assert sketch is not None
    assert got == msgspec.json.decode(msgspec.json.encode(sketch.to_json_obj()))


def histogram_traffic(rng: random.Random, n: int) -> list[DecodedRecord]:
    """Metric records with OTLP-style histogram points (what ingest.deltas or a delta histogram
    gives the windows): dyadic bucket values, some points without sum or min/max."""
    bounds = [2.0**k / 8 for k in range(14)]
    records: list[DecodedRecord] = []
    for _ in range(n):
        counts = [rng.choice([0, 0, 1, 3, 17, 250]) for _ in bounds]
        buckets = tuple((b, c) for b, c in zip(bounds, counts, strict=True))
        count = sum(counts)
        described = rng.random() < 0.5
        sample = HistogramSample(
            "http.server.duration",
            count,
            sum(b * c for b, c in buckets) if described else None,
            min((b for b, c in buckets if c), default=None) if described else None,
            max((b for b, c in buckets if c), default=None) if described else None,
            buckets,
        )
        records.append(
            DecodedRecord(
                kind=Kind.METRICS,
                data="{}",
                event_time=1_700_000_000.0 + rng.randrange(0, 90 * 8) / 8,
                service=rng.choice(["api", "db"]),
                samples=(sample, MetricSample("temperature", rng.randrange(-400, 400) / 4)),
            )
        )
    return records


def test_histogram_partials_merge_in_sql_like_in_python(conn: psycopg.Connection[Any]) -> None:
    rng = random.Random(20)
    records = histogram_traffic(rng, 600) + traffic(rng, 600)
    rng.shuffle(records)
    cuts = sorted(rng.sample(range(1, len(records)), 3))
    for lo, hi in zip([0, *cuts], [*cuts, len(records)], strict=True):
        merge_batch(conn, build_partials(records[lo:hi]))
    expected = build_partials(records)
    assert any(
        part.metric_type == "http.server.duration" and part.count > 1000
        for part in expected.values()
    )
    assert_rows_equal_partials(stored(conn), expected)
