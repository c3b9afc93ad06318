"""Unit tests for ingest.deltas: cumulative OTLP series to per-interval increments (no server)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtmh.ingest.deltas import CumulativeDeltas
from rtmh.records import (
    CumulativeSample,
    DecodedRecord,
    HistogramSample,
    Kind,
    MetricSample,
    Sample,
)
from rtmh.windows.partials import build_partials

P0 = ("otlp_metrics", 0)
P1 = ("otlp_metrics", 1)


def counter(total: float, time_ns: int, start_ns: int = 1, series: str = "a") -> CumulativeSample:
    return CumulativeSample("requests", series, start_ns, time_ns, value=total)


def histo(
    buckets: dict[float, int],
    time_ns: int,
    start_ns: int = 1,
    series: str = "h",
    total: float | None = None,
    low: float | None = None,
    high: float | None = None,
) -> CumulativeSample:
    hist = HistogramSample(
        "latency", sum(buckets.values()), total, low, high, tuple(buckets.items())
    )
    return CumulativeSample("latency", series, start_ns, time_ns, histogram=hist)


def record(*samples: Sample, t: float = 100.0) -> DecodedRecord:
    return DecodedRecord(kind=Kind.METRICS, data="{}", event_time=t, service="api", samples=samples)


def step(
    deltas: CumulativeDeltas, sample: Sample, part: tuple[str, int] = P0
) -> tuple[Sample, ...]:
    return deltas.convert(part, record(sample)).samples


def one_histogram(deltas: CumulativeDeltas, sample: CumulativeSample) -> HistogramSample:
    """The one histogram increment the point must give."""
    (increment,) = step(deltas, sample)
    assert isinstance(increment, HistogramSample)
    return increment


def increments(deltas: CumulativeDeltas, *points: CumulativeSample) -> list[tuple[Sample, ...]]:
    return [step(deltas, point) for point in points]


# ------------------------------------------------------------------------------------- sums


def test_a_counter_over_four_points_gives_three_increments_zero_included() -> None:
    deltas = CumulativeDeltas()
    got = increments(deltas, counter(10, 10), counter(15, 20), counter(15, 30), counter(22, 40))
    assert got == [
        (),  # the baseline
        (MetricSample("requests", 5.0),),
        (MetricSample("requests", 0.0),),  # did not move: still a sample, the series is alive
        (MetricSample("requests", 7.0),),
    ]


def test_a_total_that_drops_is_a_reset_counting_the_new_total() -> None:
    deltas = CumulativeDeltas()
    got = increments(deltas, counter(10, 10), counter(15, 20), counter(3, 30), counter(4, 40))
    assert got == [
        (),
        (MetricSample("requests", 5.0),),
        (MetricSample("requests", 3.0),),  # restarted: the 3 it counted since are new
        (MetricSample("requests", 1.0),),
    ]


def test_a_start_after_the_previous_point_is_a_reset_even_when_the_total_grew() -> None:
    deltas = CumulativeDeltas()
    # restarted at 25 (after the point at 20) and counted 40 since: all 40 are new
    got = increments(deltas, counter(10, 10), counter(15, 20), counter(40, 30, start_ns=25))
    assert got == [(), (MetricSample("requests", 5.0),), (MetricSample("requests", 40.0),)]
    # and the new start is what later points are diffed against
    assert step(deltas, counter(41, 40, start_ns=25)) == (MetricSample("requests", 1.0),)


def test_a_start_that_jitters_but_not_past_the_previous_point_is_diffed() -> None:
    deltas = CumulativeDeltas()
    # start re-derived as 3, then 0 (earlier): neither is a restart after the point at 10/20
    got = increments(deltas, counter(10, 10), counter(15, 20, start_ns=3), counter(16, 30, 0))
    assert got == [(), (MetricSample("requests", 5.0),), (MetricSample("requests", 1.0),)]


def test_replayed_and_out_of_order_points_give_nothing_and_leave_the_state() -> None:
    deltas = CumulativeDeltas()
    assert increments(deltas, counter(10, 10), counter(15, 20), counter(18, 30)) == [
        (),
        (MetricSample("requests", 5.0),),
        (MetricSample("requests", 3.0),),
    ]
    assert step(deltas, counter(15, 20)) == ()  # a replay
    assert step(deltas, counter(18, 30)) == ()  # the same point again
    assert step(deltas, counter(2, 25, start_ns=22)) == ()  # late, even though it looks a reset
    # still diffed against the point at 30
    assert step(deltas, counter(20, 40)) == (MetricSample("requests", 2.0),)


def test_forget_makes_the_next_point_a_baseline_on_those_partitions_only() -> None:
    deltas = CumulativeDeltas()
    step(deltas, counter(10, 10), P0)
    step(deltas, counter(10, 10), P1)
    deltas.forget([P0])
    assert len(deltas) == 1
    assert step(deltas, counter(15, 20), P0) == ()  # a baseline again
    assert step(deltas, counter(16, 30), P0) == (MetricSample("requests", 1.0),)
    assert step(deltas, counter(15, 20), P1) == (MetricSample("requests", 5.0),)
    deltas.forget([])
    assert len(deltas) == 2


def test_two_partitions_keep_the_same_series_apart() -> None:
    deltas = CumulativeDeltas()
    assert step(deltas, counter(10, 10), P0) == ()
    assert step(deltas, counter(100, 10), P1) == ()
    assert step(deltas, counter(12, 20), P0) == (MetricSample("requests", 2.0),)
    # P1's total is its own: 100 -> 150, no reset because P0 holds 12
    assert step(deltas, counter(150, 20), P1) == (MetricSample("requests", 50.0),)
    assert len(deltas) == 2


def test_a_series_that_began_while_the_partition_was_read_counts_its_first_total() -> None:
    deltas = CumulativeDeltas()
    assert step(deltas, counter(10, 100, series="old")) == ()
    # started at 150, after the point at 100 that this worker took on P0: a new process
    assert step(deltas, counter(4, 160, start_ns=150, series="new")) == (
        MetricSample("requests", 4.0),
    )
    # started at 50, before what this worker saw: it may have been counted by the previous owner
    assert step(deltas, counter(9, 170, start_ns=50, series="older")) == ()
    # the partition's latest point is per partition: nothing taken on P1 yet
    assert step(deltas, counter(4, 160, start_ns=150, series="new"), P1) == ()
    # after a forget the worker re-reads: no first point counts whole
    deltas.forget([P0])
    assert step(deltas, counter(7, 200, start_ns=190, series="newer")) == ()


def test_records_without_cumulative_samples_are_returned_as_is() -> None:
    deltas = CumulativeDeltas()
    plain = record(MetricSample("cpu", 0.5), HistogramSample("lat", 1, 2.0, None, None, ()))
    assert deltas.convert(P0, plain) is plain
    empty = record()
    assert deltas.convert(P0, empty) is empty
    assert len(deltas) == 0


def test_other_samples_keep_their_place_and_the_record_its_fields() -> None:
    deltas = CumulativeDeltas()
    deltas.convert(P0, record(counter(10, 10)))
    mixed = DecodedRecord(
        kind=Kind.METRICS,
        data='{"x": 1}',
        event_time=5.0,
        service="api",
        host="h1",
        samples=(MetricSample("cpu", 0.5), counter(12, 20), MetricSample("mem", 0.7)),
        index=3,
    )
    got = deltas.convert(P0, mixed)
    assert got.samples == (
        MetricSample("cpu", 0.5),
        MetricSample("requests", 2.0),
        MetricSample("mem", 0.7),
    )
    assert (got.data, got.event_time, got.service, got.host, got.index) == (
        '{"x": 1}',
        5.0,
        "api",
        "h1",
        3,
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_a_total_that_is_not_finite_gives_nothing_and_leaves_the_state(bad: float | None) -> None:
    deltas = CumulativeDeltas()
    step(deltas, counter(10, 10))
    assert step(deltas, CumulativeSample("requests", "a", 1, 20, value=bad)) == ()
    assert step(deltas, counter(11, 30)) == (MetricSample("requests", 1.0),)


# ------------------------------------------------------------------------------- histograms


def test_histograms_diff_count_sum_and_each_bucket() -> None:
    deltas = CumulativeDeltas()
    first = histo({1.0: 2, 5.0: 3, 50.0: 0}, 10, total=17.0, low=0.5, high=6.0)
    second = histo({1.0: 4, 5.0: 3, 50.0: 1}, 20, total=69.0, low=0.5, high=60.0)
    assert step(deltas, first) == ()
    inc = one_histogram(deltas, second)
    assert inc == HistogramSample(
        "latency",
        count=3,
        sum=52.0,
        min=None,  # the running min did not move: this interval's min is unknown
        max=60.0,  # the running max moved: an observation of this interval set it
        buckets=((1.0, 2), (50.0, 1)),  # 5.0 did not change: left out
    )
    # a point without a sum gives an increment without one (the windows estimate it); its min
    # went down (0.5 -> 0.2), so this interval holds it; no max is given, so none is known
    inc = one_histogram(deltas, histo({1.0: 5, 5.0: 3, 50.0: 1}, 30, low=0.2))
    assert (inc.count, inc.sum, inc.min, inc.max, inc.buckets) == (1, None, 0.2, None, ((1.0, 1),))


def test_a_histogram_that_did_not_move_gives_a_zero_increment() -> None:
    deltas = CumulativeDeltas()
    step(deltas, histo({1.0: 2}, 10, total=2.0))
    assert step(deltas, histo({1.0: 2}, 20, total=2.0)) == (
        HistogramSample("latency", 0, 0.0, None, None, ()),
    )


def test_a_new_bucket_counts_from_zero() -> None:
    # an exponential histogram grows its range: the stored point did not list the new bucket
    deltas = CumulativeDeltas()
    step(deltas, histo({1.0: 2, 2.0: 1}, 10))
    inc = one_histogram(deltas, histo({1.0: 2, 2.0: 1, 4.0: 3}, 20))
    assert (inc.count, inc.buckets) == (3, ((4.0, 3),))


@pytest.mark.parametrize(
    ("after", "start_ns"),
    [
        ({1.0: 1, 5.0: 0}, 1),  # the count went down
        ({1.0: 1, 5.0: 9}, 1),  # a bucket went down while the count grew
        ({1.0: 9, 5.0: 9}, 15),  # started after the previous point
    ],
)
def test_histogram_resets_count_the_whole_new_totals(
    after: dict[float, int], start_ns: int
) -> None:
    deltas = CumulativeDeltas()
    step(deltas, histo({1.0: 4, 5.0: 2}, 10, total=14.0, low=0.9, high=5.5))
    current = histo(after, 20, start_ns=start_ns, total=3.0, low=1.0, high=4.0)
    assert step(deltas, current) == (current.histogram,)
    # the new totals are the baseline of what follows
    inc = one_histogram(deltas, histo({k: v + 1 for k, v in after.items()}, 30, start_ns=start_ns))
    assert (inc.count, inc.buckets) == (2, ((1.0, 1), (5.0, 1)))


def test_a_bucket_layout_change_is_a_baseline() -> None:
    deltas = CumulativeDeltas()
    step(deltas, histo({1.0: 4, 5.0: 2}, 10))
    # other bounds (or an exponential histogram's other scale): other representative values
    assert step(deltas, histo({2.0: 4, 7.5: 3}, 20)) == ()
    inc = one_histogram(deltas, histo({2.0: 5, 7.5: 3}, 30))
    assert (inc.count, inc.buckets) == (1, ((2.0, 1),))
    # an empty bucket that disappears is no layout change
    step(deltas, histo({2.0: 5, 7.5: 3, 9.0: 0}, 40))
    inc = one_histogram(deltas, histo({2.0: 6, 7.5: 3}, 50))
    assert (inc.count, inc.buckets) == (1, ((2.0, 1),))


def test_a_series_that_changes_type_is_a_baseline() -> None:
    deltas = CumulativeDeltas()
    step(deltas, counter(10, 10, series="x"))
    assert step(deltas, histo({1.0: 1}, 20, series="x")) == ()
    assert step(deltas, counter(12, 30, series="x")) == ()
    assert step(deltas, counter(13, 40, series="x")) == (MetricSample("requests", 1.0),)


def test_histogram_increments_feed_the_windows_with_the_intervals_observations() -> None:
    deltas = CumulativeDeltas()
    points = [
        histo({10.0: 5, 100.0: 1}, 10, total=150.0),
        histo({10.0: 8, 100.0: 1}, 20, total=180.0),
        histo({10.0: 9, 100.0: 4}, 30, total=490.0),
    ]
    converted = [deltas.convert(P0, record(p, t=100.0 + i)) for i, p in enumerate(points)]
    part = build_partials(converted, 10, 10)[("api", "latency", 100)]
    assert (part.count, part.sum, part.value) == (7, 340.0, 340.0 / 7)
    assert part.sketch is not None and part.sketch.count == 7
    p50, _, p99 = part.percentiles()
    assert p50 == pytest.approx(10.0, rel=0.01)
    assert p99 == pytest.approx(100.0, rel=0.01)


# ----------------------------------------------------------------------------- bounded memory


def test_the_least_recently_updated_series_is_evicted_and_counted() -> None:
    deltas = CumulativeDeltas(max_series=2)
    step(deltas, counter(10, 10, series="a"))
    step(deltas, counter(10, 10, series="b"))
    step(deltas, counter(11, 20, series="a"))  # a is now the most recently updated
    step(deltas, counter(10, 10, series="c"))  # evicts b
    assert (len(deltas), deltas.evictions) == (2, 1)
    assert step(deltas, counter(12, 30, series="a")) == (MetricSample("requests", 1.0),)
    # what an eviction costs: b's next point is a baseline, not a first total
    assert step(deltas, counter(15, 30, series="b")) == ()
    assert deltas.evictions == 2  # b's return evicted c
    assert step(deltas, counter(16, 40, series="b")) == (MetricSample("requests", 1.0),)


def test_max_series_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_series"):
        CumulativeDeltas(max_series=0)


# ------------------------------------------------------------------ property: totals conserved


@st.composite
def counter_runs(draw: st.DrawFn) -> tuple[list[CumulativeSample], float]:
    """A counter's points, restarts included, and what it counted after its first point."""
    points: list[CumulativeSample] = []
    total, start, time_ns, counted = 0, 0, 0, 0
    for i in range(draw(st.integers(1, 30))):
        time_ns += draw(st.integers(1, 10))
        if i and draw(st.booleans()) and draw(st.booleans()):
            # a restart after the previous point: counts from zero since its new start
            start, total = time_ns, 0
            time_ns += draw(st.integers(0, 5))
        added = draw(st.integers(0, 1000))
        total += added
        if i:
            counted += added
        points.append(counter(float(total), time_ns, start_ns=start))
    return points, float(counted)


@settings(max_examples=200, deadline=None)
@given(counter_runs())
def test_increments_sum_to_what_was_counted_whatever_the_replays(
    run: tuple[list[CumulativeSample], float],
) -> None:
    points, counted = run
    deltas = CumulativeDeltas()
    got = 0.0
    for i, point in enumerate(points):
        samples = step(deltas, point)
        assert len(samples) == (1 if i else 0)  # one sample per point after the baseline
        for sample in samples:
            assert isinstance(sample, MetricSample) and sample.value >= 0
            got += sample.value
        if i:  # replaying an earlier point never adds anything
            assert step(deltas, points[i - 1]) == ()
    assert got == counted
