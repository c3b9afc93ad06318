"""Unit tests: histogram samples in the window partials and their sketches (no server)."""

from __future__ import annotations

import bisect
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.records import (
    CumulativeSample,
    DecodedRecord,
    HistogramSample,
    Kind,
    MetricSample,
    Sample,
)
from rtmh.windows.partials import (
    Partial,
    build_partials,
    histogram_stats,
    merge_partial_maps,
)

BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


def record(*samples: Sample, t: float = 100.0, service: str = "api") -> DecodedRecord:
    return DecodedRecord(
        kind=Kind.METRICS, data="{}", event_time=t, service=service, samples=samples
    )


def explicit_histogram(
    values: list[float], name: str = "latency_ms", with_stats: bool = True
) -> HistogramSample:
    """An OTLP-style explicit-bucket point: bucket i holds (BOUNDS[i-1], BOUNDS[i]], its value
    the bucket's midpoint (the overflow bucket: its lower bound)."""
    counts = [0] * (len(BOUNDS) + 1)
    for value in values:
        counts[bisect.bisect_left(BOUNDS, value)] += 1
    edges = (0.0, *BOUNDS)
    reps = [(edges[i] + edges[i + 1]) / 2 for i in range(len(BOUNDS))] + [BOUNDS[-1]]
    return HistogramSample(
        name,
        len(values),
        math.fsum(values) if with_stats else None,
        min(values) if with_stats else None,
        max(values) if with_stats else None,
        tuple(zip(reps, counts, strict=True)),
    )


def bucket_of(value: float) -> tuple[float, float]:
    i = bisect.bisect_left(BOUNDS, value)
    return ((0.0, *BOUNDS)[i], (*BOUNDS, math.inf)[i])


def test_a_known_distribution_gives_exact_stats_and_quantiles_in_the_right_bucket() -> None:
    rng = random.Random(20)
    values = [rng.lognormvariate(3.0, 1.0) for _ in range(1000)]
    parts = build_partials([record(explicit_histogram(values))], 60, 10)
    part = parts[("api", "latency_ms", 100)]
    assert (part.count, part.min, part.max, part.mode) == (1000, min(values), max(values), "mean")
    assert part.sum == math.fsum(values)
    assert part.value == pytest.approx(sum(values) / 1000, rel=1e-12)
    assert part.sketch is not None and part.sketch.count == 1000
    ordered = sorted(values)
    for q, estimate in zip((0.5, 0.95, 0.99), part.percentiles(), strict=True):
        true = ordered[math.floor(q * 999)]  # the rank the sketch's rule looks for
        low, high = bucket_of(true)
        assert estimate is not None
        # the bucket's representative (within the sketch's 1 %), clamped to [min, max]
        assert low * 0.99 <= estimate <= high * 1.01, (q, true, estimate)
    # every window holding the point sees it, and so does the global key
    assert parts[("__all__", "latency_ms", 50)].count == 1000


def test_a_point_without_sum_min_max_is_estimated_from_its_buckets() -> None:
    sample = HistogramSample("lat", 6, None, None, None, ((1.5, 2), (7.5, 0), (15.0, 4)))
    part = build_partials([record(sample)], 10, 10)[("api", "lat", 100)]
    assert (part.count, part.sum) == (6, 1.5 * 2 + 15.0 * 4)
    # the lowest / highest *non-empty* buckets' values
    assert (part.min, part.max) == (1.5, 15.0)
    p50, _, p99 = part.percentiles()
    assert p50 == pytest.approx(15.0, rel=0.01)
    assert p99 == 15.0  # clamped to the max
    # the given extremes win over the buckets' values when the point has them
    given_ = HistogramSample("lat", 6, 60.0, 1.2, 17.0, sample.buckets)
    part = build_partials([record(given_)], 10, 10)[("api", "lat", 100)]
    assert (part.sum, part.min, part.max) == (60.0, 1.2, 17.0)


def test_a_histogram_adds_to_metric_samples_of_the_same_name() -> None:
    records = [
        record(MetricSample("lat", 4.0), t=101.0),
        record(HistogramSample("lat", 3, 30.0, 8.0, 12.0, ((10.0, 3),)), t=102.0),
    ]
    part = build_partials(records, 10, 10)[("api", "lat", 100)]
    assert (part.count, part.sum, part.min, part.max, part.value) == (4, 34.0, 4.0, 12.0, 8.5)
    assert part.sketch is not None and part.sketch.count == 4


def test_points_that_add_nothing_open_no_row() -> None:
    empty = HistogramSample("lat", 0, 0.0, None, None, ())
    zero_count = HistogramSample("lat", 0, 0.0, None, None, ((1.0, 0), (2.0, 0)))
    # a sum that is not finite is estimated from the buckets: not when a bucket has no sketch
    # bucket (1e308 > MAX_INDEXABLE), nor when the buckets miss observations, nor on overflow
    huge = HistogramSample("lat", 2, math.inf, None, None, ((1e308, 2),))
    short = HistogramSample("lat", 5, None, None, None, ((1.0, 3),))
    overflow = HistogramSample("lat", 8, None, None, None, ((4e307, 8),))
    cumulative = CumulativeSample("lat", "s", 1, 2, value=5.0)
    skipped = (empty, zero_count, huge, short, overflow)
    assert build_partials([record(*skipped, cumulative)], 10, 10) == {}
    assert [histogram_stats(sample) for sample in skipped] == [None] * len(skipped)
    # the same buckets with a sum are fine: the count and sum are the point's
    assert histogram_stats(HistogramSample("lat", 5, 4.0, None, None, ((1.0, 3),))) is not None


def test_buckets_without_a_sketch_bucket_are_left_out_of_the_sketch_only() -> None:
    sample = HistogramSample("lat", 5, 16.0, None, None, ((2.0, 3), (math.inf, 2)))
    part = build_partials([record(sample)], 10, 10)[("api", "lat", 100)]
    # the count and sum are the point's (exact); extremes and sketch from the usable buckets
    assert (part.count, part.sum, part.min, part.max) == (5, 16.0, 2.0, 2.0)
    assert part.sketch is not None and part.sketch.count == 3
    # a NaN sum is estimated from the buckets
    nan_sum = HistogramSample("lat", 4, math.nan, None, None, ((2.0, 3), (4.0, 1)))
    assert build_partials([record(nan_sum)], 10, 10)[("api", "lat", 100)].sum == 10.0


def test_cumulative_samples_are_skipped() -> None:
    cumulative = CumulativeSample(
        "lat",
        "s",
        1,
        2,
        histogram=HistogramSample("lat", 3, 3.0, None, None, ((1.0, 3),)),
    )
    parts = build_partials([record(cumulative, MetricSample("cpu", 0.5))], 10, 10)
    assert {key[1] for key in parts} == {"cpu"}


def test_a_histogram_named_like_a_builtin_type_gets_its_own_row() -> None:
    sample = HistogramSample("error_rate", 2, 1.0, None, None, ((0.5, 2),))
    parts = build_partials([record(sample)], 10, 10)
    assert parts[("api", "metric:error_rate", 100)].mode == "mean"
    assert ("api", "error_rate", 100) not in parts


def test_observe_histogram_equals_build_partials() -> None:
    sample = explicit_histogram([0.5, 3.0, 3.5, 40.0, 2000.0])
    part = Partial("api", "latency_ms", 100, 110, "mean")
    part.observe_histogram(sample)
    assert part == build_partials([record(sample)], 10, 10)[("api", "latency_ms", 100)]


# ------------------------------------------------------------------ properties

# dyadic values with bounded exponents: every float sum is exact in any order, so partials built
# in any grouping must be *equal*, not merely close
dyadic = st.builds(lambda m, e: m * 2.0**e, st.integers(-1024, 1024), st.integers(-6, 6))


@st.composite
def histograms(draw: st.DrawFn) -> HistogramSample:
    values = draw(st.lists(dyadic, min_size=1, max_size=6, unique=True))
    buckets = tuple((v, draw(st.integers(0, 50))) for v in values)
    count = sum(c for _, c in buckets)
    with_stats = draw(st.booleans())
    non_empty = [v for v, c in buckets if c]
    return HistogramSample(
        draw(st.sampled_from(["lat", "size"])),
        count,
        math.fsum(v * c for v, c in buckets) if with_stats else None,
        min(non_empty) if with_stats and non_empty else None,
        max(non_empty) if with_stats and non_empty else None,
        buckets,
    )


@st.composite
def metric_records(draw: st.DrawFn) -> DecodedRecord:
    samples = draw(
        st.lists(
            st.one_of(histograms(), st.builds(MetricSample, st.sampled_from(["lat"]), dyadic)),
            max_size=3,
        )
    )
    return record(
        *samples,
        t=1_700_000_000.0 + draw(st.floats(0.0, 120.0)),
        service=draw(st.sampled_from(["api", "db"])),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(metric_records(), max_size=25))
def test_a_histogram_is_its_observations_one_by_one(records: list[DecodedRecord]) -> None:
    """A point whose sum and extremes are its buckets' equals its buckets expanded into unit
    samples: same count, sum, min, max and sketch, in every window."""
    expanded = [
        record(
            *(
                expanded
                for sample in r.samples
                for expanded in (
                    [MetricSample(sample.name, v) for v, c in sample.buckets for _ in range(c)]
                    if isinstance(sample, HistogramSample)
                    else [sample]
                )
            ),
            t=r.event_time,
            service=r.service,
        )
        for r in records
    ]
    assert build_partials(records, 60, 10) == build_partials(expanded, 60, 10)


@settings(max_examples=150, deadline=None)
@given(st.lists(metric_records(), max_size=30), st.data())
def test_partials_of_histograms_merge_in_any_grouping(
    records: list[DecodedRecord], data: st.DataObject
) -> None:
    whole = build_partials(records, 60, 10)
    cut1 = data.draw(st.integers(0, len(records)))
    cut2 = data.draw(st.integers(cut1, len(records)))
    a = build_partials(records[:cut1], 60, 10)
    b = build_partials(records[cut1:cut2], 60, 10)
    c = build_partials(records[cut2:], 60, 10)
    assert merge_partial_maps(merge_partial_maps(a, b), c) == whole
    assert merge_partial_maps(a, merge_partial_maps(c, b)) == whole
