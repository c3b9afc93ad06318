"""The benchmarks' statistics and burst schedule: pure functions, no servers."""

from __future__ import annotations

import itertools

import pytest

from rtmh.bench.detect import DetectConfig, schedule
from rtmh.bench.detect.measure import summary
from rtmh.bench.notify import summarise
from rtmh.bench.stats import distribution, percentile


def test_percentiles_interpolate_between_ranks_like_numpy() -> None:
    values = [0.1, 0.2, 0.3, 0.4, 1.0]
    assert percentile(values, 0.5) == 0.3
    assert percentile(values, 0.99) == pytest.approx(0.4 + 0.6 * 0.96)
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([5.0], 0.99) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5, "in any order"
    assert percentile(values, 0.0) == 0.1 and percentile(values, 1.0) == 1.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_distribution_of_one_to_a_hundred() -> None:
    figures = distribution([float(v) for v in range(100, 0, -1)], (0.5, 0.99))
    assert figures["min"] == 1.0 and figures["max"] == 100.0 and figures["mean"] == 50.5
    assert figures["p50"] == 50.5
    assert figures["p99"] == pytest.approx(99.01)


def test_each_bench_summarises_with_the_one_percentile() -> None:
    stats = summary([0.1, 0.2, 0.3, 0.4, 1.0])
    assert stats is not None and stats["n"] == 5 and stats["max"] == 1.0
    assert stats["p50"] == 0.3 and stats["p99"] == pytest.approx(0.4 + 0.6 * 0.96)
    assert summary([]) is None
    figures = summarise([float(v) for v in range(1, 101)])
    assert figures["count"] == 100 and figures["p50"] == 50.5 and figures["max"] == 100.0
    assert figures["p99"] == pytest.approx(99.01)
    assert summarise([]) == {"count": 0}


def test_schedule_spaces_bursts_and_rests_each_service() -> None:
    bursts = schedule(DetectConfig(bursts=7, services=3, warmup_s=10))
    assert bursts[0].start == 10
    for a, b in itertools.pairwise(bursts):
        assert b.start >= a.end + 1.0
    by_service: dict[str, list[float]] = {}
    for b in bursts:
        by_service.setdefault(b.service, []).append(b.start)
    assert sorted(by_service) == sorted({"checkout", "payments", "search"})
    for starts in by_service.values():
        assert all(y - x >= 40.0 for x, y in itertools.pairwise(starts))
