"""Unit tests for the window stage's pure core: window assignment and partials (no server)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.records import DecodedRecord, Kind, MetricSample
from rtmh.windows.assign import pane_start, validate_window, window_starts
from rtmh.windows.partials import (
    Mode,
    Partial,
    PartialKey,
    build_partials,
    merge_partial_maps,
    merge_partials,
    metric_type_for_sample,
    percentiles_of,
)
from rtmh.windows.sketch import Sketch
from rtmh.windows.store import (
    SKETCH_STAGE_COLUMNS,
    SQL,
    STAGE_COLUMNS,
    merged_sketch_rows,
    partial_rows,
)

from .test_sketch import sketch_of

# ============================================================================ assignment


def test_defaults_are_60_by_10() -> None:
    assert list(window_starts(125.0)) == [70, 80, 90, 100, 110, 120]


def test_boundary_belongs_to_the_window_starting_there() -> None:
    # t = 120 opens [120, 180) and has left [60, 120)
    starts = list(window_starts(120.0, 60, 10))
    assert starts == [70, 80, 90, 100, 110, 120]
    assert 60 not in starts
    assert list(window_starts(119.999, 60, 10)) == [60, 70, 80, 90, 100, 110]


def test_size_equal_to_slide_is_tumbling() -> None:
    assert list(window_starts(59.9, 30, 30)) == [30]
    assert list(window_starts(60.0, 30, 30)) == [60]


def test_no_window_starts_before_the_epoch() -> None:
    assert list(window_starts(0.0, 60, 10)) == [0]
    assert list(window_starts(5.0, 60, 10)) == [0]
    assert list(window_starts(25.0, 60, 10)) == [0, 10, 20]
    assert list(window_starts(59.0, 60, 10)) == [0, 10, 20, 30, 40, 50]
    assert list(window_starts(60.0, 60, 10)) == [10, 20, 30, 40, 50, 60]


def test_float_just_below_a_boundary_at_current_epoch() -> None:
    # 1700000009.9999998 / 10 rounds to 170000001.0 in floats; integer flooring must not
    t = math.nextafter(1_700_000_010.0, 0.0)
    assert pane_start(t, 10) == 1_700_000_000
    assert max(window_starts(t)) == 1_700_000_000
    assert max(window_starts(1_700_000_010.0)) == 1_700_000_010


@pytest.mark.parametrize("t", [-0.5, -10.0, math.nan, math.inf])
def test_bad_event_times_are_refused(t: float) -> None:
    with pytest.raises(ValueError, match="event time"):
        window_starts(t)


@pytest.mark.parametrize(
    ("size", "slide", "message"),
    [
        (60, 7, "multiple of the slide"),
        (5, 10, "multiple of the slide"),
        (0, 10, "size must be positive"),
        (60, 0, "slide must be positive"),
        (-60, 10, "size must be positive"),
        (60.0, 10, "must be an int"),
        (True, 1, "must be an int"),
    ],
)
def test_invalid_window_shapes(size: int, slide: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_window(size, slide)
    with pytest.raises(ValueError, match=message):
        window_starts(100.0, size, slide)
    with pytest.raises(ValueError, match=message):
        build_partials([], size, slide)


shapes = st.tuples(st.integers(1, 120), st.integers(1, 12)).map(lambda p: (p[0] * p[1], p[0]))


@given(st.floats(min_value=0.0, max_value=4e9), shapes)
def test_window_starts_are_exactly_the_windows_holding_t(t: float, shape: tuple[int, int]) -> None:
    size, slide = shape
    starts = list(window_starts(t, size, slide))
    second = math.floor(t)
    candidates = range(max(0, second - size - slide), second + slide + 1)
    expected = [s for s in candidates if s % slide == 0 and s <= t < s + size]
    assert starts == expected
    assert len(starts) == min(size // slide, second // slide + 1)


# ============================================================================ partials


def log(t: float, service: str = "api", error: bool = False) -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.LOGS,
        data="{}",
        event_time=t,
        service=service,
        level="error" if error else "info",
        is_error=error,
    )


def metric(t: float, name: str, value: float, service: str = "api") -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.METRICS,
        data="{}",
        event_time=t,
        service=service,
        samples=(MetricSample(name, value),),
    )


def event(t: float, service: str = "api") -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.EVENTS, data="{}", event_time=t, service=service, event_type="deploy"
    )


def test_log_windows_count_errors_and_rate() -> None:
    records = [log(100.0), log(101.0, error=True), log(105.0), log(112.0)]
    parts = build_partials(records, 60, 10)
    rate = parts[("api", "error_rate", 100)]
    assert (rate.count, rate.sum, rate.value, rate.mode) == (4, 1.0, 0.25, "ratio")
    errors = parts[("api", "error_count", 100)]
    assert (errors.count, errors.sum, errors.value, errors.mode) == (4, 1.0, 1.0, "sum")
    logs = parts[("api", "log_count", 100)]
    assert (logs.count, logs.value, logs.mode, logs.sketch) == (4, 4.0, "count", None)
    # the window starting at 110 holds only the line at 112: zero errors still get a row
    zero = parts[("api", "error_count", 110)]
    assert (zero.count, zero.value) == (1, 0.0)
    assert parts[("api", "error_rate", 110)].value == 0.0
    assert parts[("api", "log_count", 110)].window_end == 170
    # the global key sees the same
    assert parts[("__all__", "error_rate", 100)].value == 0.25


def test_metric_windows_have_stats_and_sketch() -> None:
    records = [metric(30.0 + i, "latency_ms", float(v)) for i, v in enumerate([5, 1, 9, 4])]
    part = build_partials(records, 60, 10)[("api", "latency_ms", 30)]
    assert (part.count, part.sum, part.min, part.max, part.mode) == (4, 19.0, 1.0, 9.0, "mean")
    assert part.value == pytest.approx(4.75)
    assert part.sketch is not None and part.sketch.count == 4
    p50, p95, p99 = part.percentiles()
    assert p50 == pytest.approx(4.0, rel=0.01)
    # clamped to the window's max, where the bucket estimate alone could overshoot by 1 %
    assert p99 is not None and p99 <= 9.0
    assert p95 == p99


def test_event_windows_count() -> None:
    parts = build_partials([event(7.0), event(8.0, "db")], 20, 10)
    assert parts[("api", "event_count", 0)].value == 1.0
    assert parts[("__all__", "event_count", 0)].value == 2.0
    assert set(parts) == {
        (key, "event_count", start) for key in ("api", "db", "__all__") for start in (0,)
    }


def test_out_of_range_records_and_bad_samples_are_left_out() -> None:
    flagged = DecodedRecord(
        kind=Kind.LOGS, data="{}", event_time=5.0, service="api", flags=("ts_out_of_range",)
    )
    bad = metric(5.0, "x", math.nan)
    huge = metric(5.0, "x", 1e308)
    assert build_partials([flagged, bad, huge], 60, 10) == {}


def test_metric_named_like_a_builtin_type_gets_its_own_row() -> None:
    assert metric_type_for_sample("error_rate") == "metric:error_rate"
    assert metric_type_for_sample("cpu") == "cpu"
    parts = build_partials([metric(1.0, "error_rate", 0.5), log(1.0)], 10, 10)
    assert parts[("api", "metric:error_rate", 0)].mode == "mean"
    assert parts[("api", "error_rate", 0)].mode == "ratio"


def test_service_named_like_the_global_key_counts_once() -> None:
    parts = build_partials([log(1.0, "__all__"), log(2.0, "api")], 10, 10)
    assert parts[("__all__", "log_count", 0)].count == 2
    assert parts[("api", "log_count", 0)].count == 1


def test_merge_refuses_different_windows() -> None:
    a = Partial("api", "log_count", 0, 60, "count", 1, 1.0)
    with pytest.raises(ValueError, match="cannot merge"):
        merge_partials(a, Partial("api", "log_count", 10, 70, "count", 1, 1.0))
    with pytest.raises(ValueError, match="cannot merge"):
        merge_partials(a, Partial("api", "log_count", 0, 60, "sum", 1, 1.0))


# ------------------------------------------------------------------ property: vs brute force

EXPECTED_MODES: dict[str, Mode] = {
    "log_count": "count",
    "error_count": "sum",
    "error_rate": "ratio",
    "event_count": "count",
}

# dyadic values with bounded exponents: every sum is exact in any order, so partials built in
# any grouping must be *equal*, not merely close
dyadic = st.builds(lambda m, e: m * 2.0**e, st.integers(-1024, 1024), st.integers(-8, 8))


@st.composite
def records_strategy(draw: st.DrawFn, base: float) -> DecodedRecord:
    t = base + draw(st.floats(min_value=0.0, max_value=200.0))
    service = draw(st.sampled_from(["api", "db", "web"]))
    kind = draw(st.sampled_from(list(Kind)))
    flags = ("ts_out_of_range",) if draw(st.integers(0, 19)) == 0 else ()
    if kind is Kind.LOGS:
        error = draw(st.booleans())
        return DecodedRecord(
            kind=kind, data="{}", event_time=t, service=service, is_error=error, flags=flags
        )
    if kind is Kind.METRICS:
        samples = draw(
            st.lists(
                st.builds(MetricSample, st.sampled_from(["lat", "cpu", "error_rate"]), dyadic),
                max_size=3,
            )
        )
        return DecodedRecord(
            kind=kind, data="{}", event_time=t, service=service, samples=tuple(samples), flags=flags
        )
    return DecodedRecord(kind=kind, data="{}", event_time=t, service=service, flags=flags)


def brute_force(
    records: Iterable[DecodedRecord], size: int, slide: int
) -> dict[PartialKey, Partial]:
    """Per window, straight from the definition: no panes, no merging."""
    observations: dict[PartialKey, list[float]] = defaultdict(list)
    for r in records:
        if "ts_out_of_range" in r.flags:
            continue
        second = math.floor(r.event_time)
        starts = [
            s
            for s in range(max(0, second - size), second + 1)
            if s % slide == 0 and s <= r.event_time < s + size
        ]
        items: list[tuple[str, float]] = []
        if r.kind is Kind.LOGS:
            flag = 1.0 if r.is_error else 0.0
            items = [("log_count", 1.0), ("error_count", flag), ("error_rate", flag)]
        elif r.kind is Kind.EVENTS:
            items = [("event_count", 1.0)]
        else:
            items = [
                ("metric:" + s.name if s.name == "error_rate" else s.name, s.value)
                for s in r.samples
            ]
        for key in {r.service, "__all__"}:
            for start in starts:
                for metric_type, value in items:
                    observations[(key, metric_type, start)].append(value)
    expected: dict[PartialKey, Partial] = {}
    for (key, metric_type, start), values in observations.items():
        mode: Mode = EXPECTED_MODES.get(metric_type, "mean")
        part = Partial(key, metric_type, start, start + size, mode, len(values), sum(values))
        if mode == "mean":
            part.min, part.max = min(values), max(values)
            part.sketch = Sketch()
            part.sketch.add_all(values)
        expected[(key, metric_type, start)] = part
    return expected


batches = st.tuples(
    st.sampled_from([0.0, 1_700_000_000.0]), st.data(), shapes.filter(lambda s: s[0] <= 120)
)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_partials_equal_brute_force_and_any_split(
    batch: tuple[float, st.DataObject, tuple[int, int]],
) -> None:
    base, data, (size, slide) = batch
    records = data.draw(st.lists(records_strategy(base), max_size=40))
    whole = build_partials(records, size, slide)
    assert whole == brute_force(records, size, slide)
    for p in whole.values():
        assert p.value == (
            p.count if p.mode == "count" else p.sum if p.mode == "sum" else p.sum / p.count
        )
    # any split, merged in any grouping, gives the same partials
    cut1 = data.draw(st.integers(0, len(records)))
    cut2 = data.draw(st.integers(cut1, len(records)))
    a = build_partials(records[:cut1], size, slide)
    b = build_partials(records[cut1:cut2], size, slide)
    c = build_partials(records[cut2:], size, slide)
    assert merge_partial_maps(merge_partial_maps(a, b), c) == whole
    assert merge_partial_maps(a, merge_partial_maps(c, b)) == whole
    # merging is pure
    assert a == build_partials(records[:cut1], size, slide)


# ------------------------------------------------------------------ staging rows and SQL text


def test_partial_rows_match_stage_columns() -> None:
    parts = build_partials([log(3.0, error=True), metric(4.0, "lat", 12.5)], 10, 10)
    rows = partial_rows(parts)
    assert len(rows) == len(parts) == len(partial_rows(list(parts.values())))
    by_type = {
        row[1]: dict(zip(STAGE_COLUMNS, row, strict=True)) for row in rows if row[0] == "api"
    }
    lat = by_type["lat"]
    assert (lat["window_start"], lat["window_end"], lat["count"], lat["sum"]) == (0, 10, 1, 12.5)
    assert (lat["min"], lat["max"]) == (12.5, 12.5)
    errors = by_type["error_count"]
    assert (errors["count"], errors["sum"], errors["min"]) == (1, 1.0, None)


def test_merged_sketch_rows_add_the_batch_to_what_is_stored() -> None:
    parts = build_partials([metric(4.0, "lat", v) for v in (10.0, 20.0, 30.0)], 10, 10)
    part = parts[("api", "lat", 0)]
    assert part.sketch is not None
    before = part.sketch.copy()
    stored = sketch_of([1.0, 2.0, 3.0, 400.0])
    rows = merged_sketch_rows(
        parts,
        [
            # merged min / max come from the upsert: the batch's [10, 30] with the stored [1, 400]
            ("api", "lat", 0, 1.0, 400.0, stored.to_json()),
            # a window the batch has no sketch for (a count) is left alone
            ("api", "log_count", 0, None, None, None),
        ],
    )
    assert len(rows) == 1
    row = dict(zip(SKETCH_STAGE_COLUMNS, rows[0], strict=True))
    merged = Sketch.from_json(str(row["sketch"]))
    expected = stored.copy()
    expected.merge(part.sketch)
    assert merged == expected and merged.count == 7
    assert (row["p50"], row["p95"], row["p99"]) == percentiles_of(expected, 1.0, 400.0)
    # the partial is unchanged, so a retried checkpoint merges the same batch again
    assert part.sketch == before


def test_merged_sketch_rows_of_a_new_window_are_the_partial() -> None:
    parts = build_partials([metric(4.0, "lat", 12.5), metric(4.5, "lat", 50.0)], 10, 10)
    part = parts[("api", "lat", 0)]
    (row,) = merged_sketch_rows(parts, [("api", "lat", 0, 12.5, 50.0, None)])
    assert row[:3] == ("api", "lat", 0)
    assert row[3:6] == part.percentiles()
    assert Sketch.from_json(row[6]) == part.sketch


def test_merged_percentiles_are_clamped_to_the_merged_extremes() -> None:
    parts = build_partials([metric(4.0, "lat", 12.5)], 10, 10)
    # a stored window of one value 1000 and the batch's 12.5: p99 is the bucket of 1000, whose
    # estimate (within 1 %) may exceed the true max; it is clamped to the merged max
    (row,) = merged_sketch_rows(
        parts, [("api", "lat", 0, 12.5, 1000.0, sketch_of([1000.0]).to_json())]
    )
    assert row[5] is not None and row[5] <= 1000.0
    assert row[3] is not None and row[3] >= 12.5


@given(
    st.lists(st.floats(-1e9, 1e9, allow_nan=False), max_size=50),
    st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=50),
)
def test_merging_in_python_equals_merging_the_partials(
    stored_values: list[float], batch_values: list[float]
) -> None:
    """What merged_sketch_rows writes equals the sketch and percentiles of one partial holding
    both the stored window's values and the batch's (the exactness the property tests rely on)."""
    stored = build_partials([metric(1.0, "lat", v) for v in stored_values], 10, 10)
    batch = build_partials([metric(2.0, "lat", v) for v in batch_values], 10, 10)
    whole = build_partials(
        [metric(1.0, "lat", v) for v in stored_values]
        + [metric(2.0, "lat", v) for v in batch_values],
        10,
        10,
    )
    key = ("api", "lat", 0)
    old = stored.get(key)
    want = whole[key]
    (row,) = merged_sketch_rows(
        batch,
        [
            (
                *key,
                want.min,
                want.max,
                None if old is None or old.sketch is None else old.sketch.to_json(),
            )
        ],
    )
    assert Sketch.from_json(row[6]) == want.sketch
    assert row[3:6] == want.percentiles()


def test_sketch_json_round_trip_keeps_negative_keys_and_zero() -> None:
    sketch = sketch_of([0.001, 0.5, 2.0, -3.0, -0.01, 0.0, 1e300])
    assert any(k < 0 for k in sketch.pos) and sketch.neg and sketch.zero == 1
    assert Sketch.from_json(sketch.to_json()) == sketch
    assert Sketch.from_json(sketch.to_json().encode()) == sketch
    assert Sketch.from_json('{"p": {"5": 2}}') == Sketch.from_json_obj({"p": {"5": 2}})
    with pytest.raises(msgspec.ValidationError):
        Sketch.from_json('{"p": {"x": 1}}')


def test_sql_texts_agree_with_stage_columns() -> None:
    assert "window_partials_stage" in SQL.create_stage
    assert "ON COMMIT DELETE ROWS" in SQL.create_stage
    for column in STAGE_COLUMNS:
        assert f"\n    {column} " in SQL.create_stage
    columns = ", ".join(STAGE_COLUMNS)
    copy = " ".join(SQL.copy_stage.replace("( ", "(").split()).replace("( ", "(")
    assert f"COPY window_partials_stage ({columns}) FROM STDIN" == copy
    assert "ON CONFLICT (window_key, metric_type, window_start)" in SQL.merge_stage
    assert "window_sketch_stage" in SQL.create_sketch_stage
    assert "ON COMMIT DELETE ROWS" in SQL.create_sketch_stage
    for column in SKETCH_STAGE_COLUMNS:
        assert f"\n    {column} " in SQL.create_sketch_stage
    sketch_copy = " ".join(SQL.copy_sketch_stage.split())
    assert f"COPY window_sketch_stage ({', '.join(SKETCH_STAGE_COLUMNS)}) FROM STDIN" == sketch_copy
