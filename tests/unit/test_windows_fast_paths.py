"""Unit tests for the window stage's fast paths (issue 15): Sketch.add_all's bulk path and
quantiles' bisection give what one add per value and a walk of every bucket give; the batch's
single pass over records (a pane per record, reused while records stay in it) gives what a
record-by-record build gives, records out of time order, histograms and refused values
included (no server)."""

from __future__ import annotations

import math
from collections import defaultdict

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.records import DecodedRecord, HistogramSample, Kind, MetricSample
from rtmh.windows.assign import window_starts
from rtmh.windows.partials import (
    Partial,
    PartialKey,
    build_partials,
    metric_type_for_sample,
    mode_for,
    pane_partials,
)
from rtmh.windows.sketch import (
    GAMMA,
    MAX_BUCKETS,
    MAX_INDEXABLE,
    MIN_INDEXABLE,
    Sketch,
    bucket_estimate,
)

# ------------------------------------------------------------------------------ sketch


def one_by_one(values: list[float]) -> Sketch:
    sketch = Sketch()
    for value in values:
        sketch.add(value)
    return sketch


def walk(sketch: Sketch, q: float) -> float | None:
    """The quantile as the module docstring defines it: every bucket in ascending value order,
    the first whose running count exceeds q * (count - 1)."""
    if not 0.0 <= q <= 1.0:
        return None
    ordered = [(-bucket_estimate(k), sketch.neg[k]) for k in sorted(sketch.neg, reverse=True)]
    ordered += [(0.0, sketch.zero)] if sketch.zero else []
    ordered += [(bucket_estimate(k), sketch.pos[k]) for k in sorted(sketch.pos)]
    total = sum(c for _, c in ordered)
    if total == 0:
        return None
    running = 0
    for value, count in ordered:
        running += count
        if running > q * (total - 1):
            return value
    raise AssertionError("unreachable")


values_any = st.lists(
    st.one_of(
        st.just(0.0),
        st.just(-0.0),
        st.floats(min_value=1e-310, max_value=1e-300),  # subnormal: the zero bucket
        st.floats(min_value=1e-300, max_value=1e300),
        st.floats(min_value=-1e300, max_value=-1e-300),
    ),
    max_size=200,
)
values_positive = st.lists(st.floats(min_value=1e-300, max_value=MAX_INDEXABLE), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.one_of(values_any, values_positive), values_any)
def test_add_all_equals_one_add_per_value(first: list[float], then: list[float]) -> None:
    bulk = Sketch()
    bulk.add_all(first)
    assert bulk == one_by_one(first)
    # into a sketch that already holds buckets, and from any iterable
    bulk.add_all(iter(then))
    assert bulk == one_by_one(first + then)


def test_add_all_collapses_like_add() -> None:
    values = [GAMMA ** (k - 0.5) for k in range(MAX_BUCKETS + 700)]
    bulk = Sketch()
    bulk.add_all(values[: MAX_BUCKETS - 5])
    bulk.add_all(values[MAX_BUCKETS - 5 :])
    assert len(bulk.pos) == MAX_BUCKETS
    assert bulk == one_by_one(values)


@pytest.mark.parametrize(
    "bad",
    [math.nan, math.inf, -math.inf, 2 * MAX_INDEXABLE],
)
@pytest.mark.parametrize("at", [0, 1, 3])
def test_add_all_refuses_what_add_refuses(bad: float, at: int) -> None:
    values = [2.0, 3.0, 5.0]
    values.insert(at, bad)
    bulk = Sketch()
    with pytest.raises(ValueError, match="cannot add"):
        bulk.add_all(values)
    # like a loop of add: the values before the refused one are in
    assert bulk == one_by_one(values[:at])


@settings(max_examples=300, deadline=None)
@given(values_any, st.lists(st.floats(min_value=-0.5, max_value=1.5), max_size=8))
def test_quantiles_equal_a_walk_of_every_bucket(values: list[float], qs: list[float]) -> None:
    sketch = one_by_one(values)
    wanted = [*qs, 0.0, 0.5, 0.95, 0.99, 1.0, math.nan]
    assert sketch.quantiles(wanted) == [walk(sketch, q) for q in wanted]


def test_quantiles_of_stores_without_counts() -> None:
    # a hand-written sketch may hold empty buckets: they count for nothing
    assert Sketch.from_json_obj({"p": {"3": 0}, "z": 0}).quantiles([0.5]) == [None]
    sketch = Sketch.from_json_obj({"p": {"3": 0, "5": 2}, "n": {"1": 0}, "z": 0})
    assert sketch.quantiles([0.0, 1.0]) == [bucket_estimate(5), bucket_estimate(5)]
    assert sketch.quantile(0.5) == walk(sketch, 0.5)


def test_zero_bucket_between_the_stores() -> None:
    sketch = one_by_one([-4.0, 0.0, 0.0, MIN_INDEXABLE / 2, 7.0])
    assert sketch.quantiles([0.0, 0.25, 0.5, 0.75, 1.0]) == [
        walk(sketch, q) for q in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    assert sketch.quantile(0.5) == 0.0


def test_to_json_is_the_json_form() -> None:
    sketch = one_by_one([0.0, 1.0, 1.0, 250.0, -2.0, 1e-3])
    assert msgspec.json.decode(sketch.to_json()) == sketch.to_json_obj()
    assert msgspec.json.decode(Sketch().to_json()) == {"p": {}, "n": {}, "z": 0}


# ------------------------------------------------------------------------------ partials


def record_by_record(
    records: list[DecodedRecord], size: int, slide: int
) -> dict[PartialKey, Partial]:
    """Each record straight into each of its windows, for its service and the global key, one
    Partial update at a time (observe / observe_histogram): no panes, no bulk paths."""
    out: dict[PartialKey, Partial] = {}

    def slot(key: str, metric_type: str, start: int) -> Partial:
        part = out.get((key, metric_type, start))
        if part is None:
            mode = mode_for(metric_type)
            part = out[(key, metric_type, start)] = Partial(
                key, metric_type, start, start + size, mode
            )
        return part

    for r in records:
        if "ts_out_of_range" in r.flags:
            continue
        for start in window_starts(r.event_time, size, slide):
            for key in dict.fromkeys((r.service, "__all__")):
                if r.kind is Kind.LOGS:
                    for metric_type, add in (
                        ("log_count", 1.0),
                        ("error_count", float(r.is_error)),
                        ("error_rate", float(r.is_error)),
                    ):
                        part = slot(key, metric_type, start)
                        part.count += 1
                        part.sum += add
                elif r.kind is Kind.EVENTS:
                    part = slot(key, "event_count", start)
                    part.count += 1
                    part.sum += 1.0
                else:
                    for sample in r.samples:
                        metric_type = metric_type_for_sample(sample.name)
                        if isinstance(sample, MetricSample):
                            if -MAX_INDEXABLE <= sample.value <= MAX_INDEXABLE:
                                slot(key, metric_type, start).observe(sample.value)
                        elif isinstance(sample, HistogramSample):
                            probe = Partial(key, metric_type, start, start + size, "mean")
                            probe.observe_histogram(sample)
                            if probe.count:
                                slot(key, metric_type, start).observe_histogram(sample)
    return out


# dyadic: every sum is exact whatever the grouping, so the two builds must be *equal*
dyadic = st.builds(lambda m, e: m * 2.0**e, st.integers(-1024, 1024), st.integers(-6, 6))


@st.composite
def any_records(draw: st.DrawFn) -> DecodedRecord:
    # panes revisited out of order, so the pass's "same pane as the record before" often fails
    t = 1_700_000_000.0 + draw(st.sampled_from([0.0, 9.5, 10.0, 25.25, 61.0, 3.0]))
    service = draw(st.sampled_from(["api", "db", "__all__"]))
    kind = draw(st.sampled_from(list(Kind)))
    flags = ("ts_out_of_range",) if draw(st.integers(0, 9)) == 0 else ()
    if kind is Kind.LOGS:
        return DecodedRecord(
            kind=kind,
            data="{}",
            event_time=t,
            service=service,
            is_error=draw(st.booleans()),
            flags=flags,
        )
    if kind is Kind.EVENTS:
        return DecodedRecord(kind=kind, data="{}", event_time=t, service=service, flags=flags)
    plain = st.builds(
        MetricSample,
        st.sampled_from(["lat", "log_count", "metric:log_count"]),
        st.one_of(dyadic, st.sampled_from([0.0, -0.0, math.nan, math.inf, 1e308])),
    )
    histogram = st.builds(
        lambda c, v: HistogramSample("lat", c, None, None, None, ((v, c),)),
        st.integers(0, 3),
        dyadic,
    )
    samples = draw(st.lists(st.one_of(plain, histogram), max_size=3))
    return DecodedRecord(
        kind=kind, data="{}", event_time=t, service=service, samples=tuple(samples), flags=flags
    )


@settings(max_examples=300, deadline=None)
@given(st.lists(any_records(), max_size=40), st.sampled_from([(60, 10), (20, 10), (10, 10)]))
def test_one_pass_equals_record_by_record(
    records: list[DecodedRecord], shape: tuple[int, int]
) -> None:
    size, slide = shape
    assert build_partials(records, size, slide) == record_by_record(records, size, slide)


def test_pane_sums_are_correctly_rounded_and_do_not_depend_on_order() -> None:
    values = [0.1, 1e16, 0.2, -1e16, 0.3, 1.0 / 3.0]

    def lat(value: float, t: float) -> DecodedRecord:
        return DecodedRecord(
            kind=Kind.METRICS,
            data="{}",
            event_time=t,
            service="api",
            samples=(MetricSample("lat", value),),
        )

    forward = pane_partials([lat(v, 100.0 + i) for i, v in enumerate(values)], 10)
    backward = pane_partials([lat(v, 100.0 + i) for i, v in enumerate(reversed(values))], 10)
    part = forward[("api", "lat", 100)]
    assert part.sum == math.fsum(values) == backward[("api", "lat", 100)].sum
    assert (part.count, part.min, part.max) == (6, -1e16, 1e16)
    # a running sum beyond the float range saturates to inf, as adding one by one does
    huge = pane_partials([lat(MAX_INDEXABLE, 100.0)] * 5, 10)[("api", "lat", 100)]
    assert huge.sum == math.inf


def test_a_series_with_histograms_adds_in_arrival_order() -> None:
    samples = (
        MetricSample("lat", 0.1),
        HistogramSample("lat", 3, 0.7, 0.2, 0.3, ((0.25, 3),)),
        MetricSample("lat", 1e16),
        MetricSample("lat", -1e16),
    )
    record = DecodedRecord(
        kind=Kind.METRICS, data="{}", event_time=5.0, service="api", samples=samples
    )
    expected = Partial("api", "lat", 0, 10, "mean")
    for sample in samples:
        if isinstance(sample, HistogramSample):
            expected.observe_histogram(sample)
        else:
            expected.observe(sample.value)
    assert pane_partials([record], 10)[("api", "lat", 0)] == expected


@pytest.mark.parametrize("t", [math.nan, math.inf, -0.5])
def test_a_bad_event_time_fails_the_batch_as_before(t: float) -> None:
    good = DecodedRecord(kind=Kind.LOGS, data="{}", event_time=5.0, service="api")
    bad = DecodedRecord(kind=Kind.LOGS, data="{}", event_time=t, service="api")
    with pytest.raises(ValueError, match="event time"):
        build_partials([good, bad])


def test_records_alternating_between_panes() -> None:
    times = [5.0, 15.0, 6.0, 25.0, 7.0, 15.5, 9.999, 10.0]
    records = [
        DecodedRecord(kind=Kind.LOGS, data="{}", event_time=t, service="api", is_error=i % 2 == 0)
        for i, t in enumerate(times)
    ]
    panes = pane_partials(records, 10)
    counts: dict[int, int] = defaultdict(int)
    for t in times:
        counts[int(t) - int(t) % 10] += 1
    assert {k[2]: p.count for k, p in panes.items() if k[:2] == ("api", "log_count")} == counts
    assert build_partials(records, 30, 10) == record_by_record(records, 30, 10)
