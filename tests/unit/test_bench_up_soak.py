"""rtmh.bench.up_soak's arithmetic: the memory slope and the exactly-once verdict."""

from __future__ import annotations

from rtmh.bench.stats import slope
from rtmh.bench.up_soak import Sample, SoakResult, consumer_lags


def test_slope_is_least_squares_per_unit_asked() -> None:
    assert slope([(0, 1.0), (1, 1.0)]) is None
    assert slope([(0, 10.0), (60, 11.0), (120, 12.0)], per=600.0) == 10.0
    assert slope([(0, 5.0), (0, 6.0), (0, 7.0)]) is None


def sample(t: float, rss: float) -> Sample:
    return Sample(t, rss, 10.0, 5.0, 100, 0.2, 0.3, 0)


def test_memory_is_judged_over_the_second_half() -> None:
    result = SoakResult(2.0, 30.0, 2000)
    # climbing at start-up, flat once the log is bounded
    result.samples = [sample(t, rss) for t, rss in ((20, 10), (40, 18), (70, 20), (95, 20))]
    assert result.rss_slope_mb_per_10_min() is None  # two samples in the second half
    result.samples.append(sample(120, 20))
    assert result.rss_slope_mb_per_10_min() == 0.0
    assert result.figures()["broker_rss_max_mb"] == 20


def test_exactly_once_is_every_delivered_message_stored() -> None:
    result = SoakResult(1.0, 5.0, 100)
    assert not result.exactly_once  # nothing delivered proves nothing
    result.delivered, result.stored, result.dead_letters = 1000, 998, 2
    assert result.exactly_once
    result.stored = 999
    assert not result.exactly_once
    result.stored, result.failed = 998, 1
    assert not result.exactly_once


def test_consumer_lag_comes_from_ups_summary_lines_after_the_warm_up() -> None:
    text = "\n".join(
        [
            "2026-11-30 23:10:06 RTMH is up.",
            "2026-11-30 23:10:06 in 0/s, written 0/s, dead letters 0, lag 1,309, open incidents 0",
            "2026-11-30 23:11:06 in 425/s, written 449/s, dead letters 0, lag 40, open incidents 1;"
            " broker 19 MB, cpu 12 %, log 0.2 MiB in at most 91 batches a partition, 6 rolls",
            "2026-11-30 23:11:16 broker log rolled (why): 1 messages",
            "2026-11-30 23:11:17 in 427/s, written 459/s, dead letters 0, lag 260, open "
            "incidents 0",
        ]
    )
    assert consumer_lags(text) == [40, 260]
    result = SoakResult(1.0, 5.0, 100)
    result.delivered, result.consumer_lags = 26_000, [40, 260]
    assert result.consumer_lag_max_s() == 0.6  # 260 messages at 433 a second
