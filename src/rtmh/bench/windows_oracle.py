"""A brute-force oracle for metrics_agg: every window recomputed from raw_events alone. The
windows property test and `rtmh bench soak`'s end check both judge metrics_agg with it.

Deliberately shares no code with ``rtmh.windows``: windows are found by testing every candidate
start against every event time (as integer microseconds, the precision raw_events stores),
metric samples are re-read from the stored JSON, sums are exact (``math.fsum``) and percentiles
are compared against exact order statistics. Only the documented contract is re-stated here:

* windows ``[start, start + size)`` with ``start`` a non-negative multiple of ``slide``;
* window keys: the row's service and the global key ``__all__`` (one row when they coincide);
* ``log_count`` (count = sum = lines), ``error_count`` / ``error_rate`` (count = lines,
  sum = error/fatal lines), ``event_count`` (count = sum = events), one row per metric name
  (``metric:<name>`` when the name is one of those four) with count/sum/min/max, mean as value
  and a DDSketch (gamma = 1.01 / 0.99, bucket ``ceil(log_gamma |x|)``, ``|x| <= MIN_INDEXABLE``
  counts as zero, ``|x| > MAX_INDEXABLE`` is not windowed);
* rows flagged ``ts_out_of_range`` are stored but not windowed.
"""

from __future__ import annotations

import bisect
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from rtmh.db.queries import load

SQL = load("bench")

GLOBAL_KEY = "__all__"
BUILTIN_TYPES = ("log_count", "error_count", "error_rate", "event_count")
ERROR_LEVELS = ("error", "fatal")
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
MIN_INDEXABLE = sys.float_info.min * GAMMA
MAX_INDEXABLE = sys.float_info.max / 4
MAX_BUCKETS = 2048
#: floating-point summation error allowed, relative to the sum of magnitudes
SUM_REL = 1e-9

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = 1_000_000

Key = tuple[str, str, int]  # (window_key, metric_type, window_start in epoch seconds)


@dataclass(slots=True)
class RawRow:
    kind: str  # logs / metrics / events, from the topic
    event_us: int  # event_time as integer microseconds since the epoch
    service: str
    level: str | None
    flags: tuple[str, ...]
    data: Any  # the stored JSON, parsed


@dataclass(slots=True)
class Expected:
    """One window as the oracle computes it."""

    count: int = 0
    errors: int = 0  # logs only
    values: list[float] = field(default_factory=list)  # metrics only


def to_us(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def load_raw(conn: psycopg.Connection[Any], prefix: str) -> list[RawRow]:
    """Every stored row; its JSON only for metrics (streamed: an hour's soak is ~10^6 rows)."""
    out = []
    with conn.cursor(name="oracle_raw_events") as cur:
        cur.itersize = 10_000
        for topic, event_time, service, level, flags, data in cur.execute(SQL.oracle_raw_events):
            if not topic.startswith(prefix):
                raise ValueError(f"raw_events holds topic {topic!r}, not one of {prefix!r}*")
            out.append(
                RawRow(
                    kind=topic[len(prefix) :],
                    event_us=to_us(event_time),
                    service=service,
                    level=level,
                    flags=tuple(flags),
                    data=None if data is None else json.loads(data),
                )
            )
    return out


def metric_samples(data: dict[str, Any]) -> list[tuple[str, float]]:
    """(name, value) of a stored metric message: plain ``name``/``value`` or Telegraf ``fields``
    (numeric and boolean fields, named ``<name>_<field>``)."""
    fields = data.get("fields")
    if fields is None:
        return [(data["name"], float(data["value"]))]
    samples = []
    for key, raw in fields.items():
        if isinstance(raw, bool):
            samples.append((f"{data['name']}_{key}", 1.0 if raw else 0.0))
        elif isinstance(raw, int | float):
            samples.append((f"{data['name']}_{key}", float(raw)))
    return samples


def metric_type_of(name: str) -> str:
    return "metric:" + name if name in BUILTIN_TYPES else name


def _contributions(row: RawRow) -> list[tuple[str, float | None]]:
    """(metric_type, sample value or None for counters) this row adds to each of its windows."""
    if row.kind == "logs":
        error = 1.0 if row.level in ERROR_LEVELS else 0.0
        return [("log_count", None), ("error_count", error), ("error_rate", error)]
    if row.kind == "events":
        return [("event_count", None)]
    assert row.kind == "metrics", row.kind
    return [
        (metric_type_of(name), value)
        for name, value in metric_samples(row.data)
        if abs(value) <= MAX_INDEXABLE
    ]


def expected_windows(rows: Iterable[RawRow], size: int, slide: int) -> dict[Key, Expected]:
    """Every window with at least one contribution, by brute force over candidate starts."""
    # (window_key, metric_type) -> [(event_us, value)], in event-time order
    series: dict[tuple[str, str], list[tuple[int, float | None]]] = defaultdict(list)
    for row in rows:
        if "ts_out_of_range" in row.flags:
            continue
        for metric_type, value in _contributions(row):
            for window_key in {row.service, GLOBAL_KEY}:
                series[(window_key, metric_type)].append((row.event_us, value))
    out: dict[Key, Expected] = {}
    for (window_key, metric_type), points in series.items():
        points.sort(key=lambda p: p[0])
        times = [t for t, _ in points]
        # every multiple of the slide from a window's length before the first event to the last
        first = max(0, times[0] // _US - size - slide)
        first -= first % slide
        for start in range(first, times[-1] // _US + slide, slide):
            lo = bisect.bisect_left(times, start * _US)
            hi = bisect.bisect_left(times, (start + size) * _US)
            inside = points[lo:hi]
            if not inside:
                continue
            assert all(start * _US <= t < (start + size) * _US for t, _ in inside)
            window = Expected(count=len(inside))
            if metric_type in ("error_count", "error_rate"):
                window.errors = sum(1 for _, v in inside if v)
            elif metric_type not in BUILTIN_TYPES:
                window.values = [v for _, v in inside if v is not None]
            out[(window_key, metric_type, start)] = window
    return out


# --- the DDSketch contract, restated --------------------------------------------------------


def sketch_of(values: Iterable[float]) -> dict[str, Any]:
    """The sketch JSON the documented mapping gives for ``values`` (keys as ints)."""
    pos: dict[int, int] = defaultdict(int)
    neg: dict[int, int] = defaultdict(int)
    zero = 0
    for x in values:
        if x > MIN_INDEXABLE:
            pos[math.ceil(math.log(x) / math.log(GAMMA))] += 1
        elif x < -MIN_INDEXABLE:
            neg[math.ceil(math.log(-x) / math.log(GAMMA))] += 1
        else:
            zero += 1
    return {"p": _collapse(pos), "n": _collapse(neg), "z": zero}


def _collapse(store: dict[int, int]) -> dict[int, int]:
    keys = sorted(store, reverse=True)
    if len(keys) <= MAX_BUCKETS:
        return dict(store)
    kept = {k: store[k] for k in keys[:MAX_BUCKETS]}
    kept[keys[MAX_BUCKETS - 1]] += sum(store[k] for k in keys[MAX_BUCKETS:])
    return kept


def _normalise_sketch(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    return {"p": _store(obj.get("p")), "n": _store(obj.get("n")), "z": int(obj.get("z") or 0)}


def _store(form: dict[str, Any] | list[Any] | None) -> dict[int, int]:
    """A stored store as key -> count, in either shape (read here without the sketch module):
    an object of key -> count, or dense, [first key, "count,count,..."] with empty buckets."""
    if isinstance(form, list):
        low, text = form
        counts = [int(c) for c in text.split(",")]
        return {low + i: c for i, c in enumerate(counts) if c}
    return {int(k): int(c) for k, c in (form or {}).items()}


def exact_quantile(ordered: list[float], q: float) -> float:
    """The order statistic DDSketch estimates: the first value whose rank (1-based count of
    values up to and including it) exceeds q * (n - 1)."""
    rank = q * (len(ordered) - 1)
    for i, value in enumerate(ordered):
        if i + 1 > rank:
            return value
    raise AssertionError("unreachable")


def quantile_close(got: float, exact: float) -> bool:
    """Within the sketch's 1 % relative accuracy (plus the zero bucket's absolute width)."""
    return abs(got - exact) <= RELATIVE_ACCURACY * abs(exact) * (1 + 1e-9) + MIN_INDEXABLE


# --- comparison -------------------------------------------------------------------------------


def load_agg(conn: psycopg.Connection[Any]) -> dict[Key, dict[str, Any]]:
    out: dict[Key, dict[str, Any]] = {}
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    for row in cur.execute(SQL.oracle_metrics_agg):
        key = (row["window_key"], row["metric_type"], to_us(row["window_start"]) // _US)
        assert to_us(row["window_start"]) % _US == 0, row
        out[key] = row
    return out


def _exact_sum(values: list[float]) -> float:
    try:
        return math.fsum(values)
    except OverflowError:  # the exact sum is beyond the float range: IEEE addition saturates
        return math.copysign(math.inf, math.fsum(v * 2.0**-64 for v in values))


def _sum_ok(got: float, values: list[float]) -> bool:
    exact = _exact_sum(values)
    if math.isinf(exact) or math.isinf(got):
        return got == exact
    bound = SUM_REL * math.fsum(abs(v) for v in values)
    return abs(got - exact) <= bound


def check_window(key: Key, want: Expected, got: dict[str, Any], size: int) -> list[str]:
    """Differences between one metrics_agg row and the oracle's window (empty when equal)."""
    _, metric_type, start = key
    problems: list[str] = []

    def bad(what: str, expected: object) -> None:
        problems.append(f"{key}: {what} is {got.get(what)!r}, expected {expected!r}")

    if to_us(got["window_end"]) != (start + size) * _US:
        bad("window_end", datetime.fromtimestamp(start + size, UTC))
    if got["count"] != want.count:
        bad("count", want.count)
    if metric_type in ("log_count", "event_count"):
        expect = {"sum": float(want.count), "value": float(want.count)}
    elif metric_type == "error_count":
        expect = {"sum": float(want.errors), "value": float(want.errors)}
    elif metric_type == "error_rate":
        expect = {"sum": float(want.errors), "value": want.errors / want.count}
    else:
        expect = {}
    if expect:
        for column, expected in expect.items():
            if got[column] != expected:
                bad(column, expected)
        for column in ("min", "max", "p50", "p95", "p99", "sketch"):
            if got[column] is not None:
                bad(column, None)
        return problems

    values = want.values
    if not _sum_ok(got["sum"], values):
        bad("sum", _exact_sum(values))
    # value is the mean of the stored sum (checked above), as PostgreSQL divides it
    if got["value"] != got["sum"] / got["count"]:
        bad("value", got["sum"] / got["count"])
    if got["min"] != min(values):
        bad("min", min(values))
    if got["max"] != max(values):
        bad("max", max(values))
    if _normalise_sketch(got["sketch"]) != sketch_of(values):
        bad("sketch", sketch_of(values))
    ordered = sorted(values)
    for column, q in QUANTILES:
        exact = exact_quantile(ordered, q)
        estimate = got[column]
        if estimate is None or not min(values) <= estimate <= max(values):
            bad(column, f"~{exact!r} within [min, max]")
        elif not quantile_close(estimate, exact):
            bad(column, f"{exact!r} +- 1 %")
    return problems


def compare(
    expected: dict[Key, Expected], actual: dict[Key, dict[str, Any]], size: int
) -> list[str]:
    """Every difference between the oracle and metrics_agg: missing, extra or unequal rows."""
    problems = [f"missing window {k}: {expected[k]}" for k in sorted(expected.keys() - actual)]
    problems += [
        f"extra window {k}: count {actual[k]['count']}" for k in sorted(actual.keys() - expected)
    ]
    for key in sorted(expected.keys() & actual.keys()):
        problems += check_window(key, expected[key], actual[key], size)
    return problems


def windows_problems(url: str, prefix: str, size: int, slide: int) -> tuple[int, list[str]]:
    """Recompute every window from raw_events and compare with metrics_agg: the number of
    windows recomputed, and every difference."""
    with psycopg.connect(url) as conn:
        rows = load_raw(conn, prefix)
        actual = load_agg(conn)
    expected = expected_windows(rows, size, slide)
    problems = compare(expected, actual, size)
    if problems:
        problems.insert(
            0,
            f"{len(problems)} difference(s) between metrics_agg ({len(actual)} rows) and the "
            f"recomputation from {len(rows)} raw_events ({len(expected)} windows):",
        )
    return len(expected), problems


def assert_windows_match(url: str, prefix: str, size: int, slide: int) -> int:
    """Recompute every window from raw_events and compare with metrics_agg; returns the number of
    windows compared."""
    compared, problems = windows_problems(url, prefix, size, slide)
    if problems:
        raise AssertionError("\n  ".join(problems[:16]))
    return compared
