"""Cumulative OTLP series to per-interval increments, per worker, before the windows.

Role in the data flow: decode (``ingest.otlp``) turns an OTLP monotonic sum or cumulative
histogram point into a ``CumulativeSample`` (the running total since ``start_ns``); the worker
passes each decoded metric record through ``CumulativeDeltas.convert`` with the Kafka partition
it came from, and the windows then see what happened *in the interval* since the series' previous
point: a ``MetricSample`` (the increase of a sum) or a ``HistogramSample`` (the observations
added to a histogram's buckets). The raw row stored in raw_events keeps the original point.

A series is (Kafka partition, ``CumulativeSample.series``). Its points must reach one partition,
in order, to be diffed: with the OpenTelemetry Collector's Kafka exporter set
``partition_metrics_by_resource_attributes: true`` (a top-level option of the ``kafka`` exporter,
default false; it keys each message by a hash of the resource's sorted attributes). Without it,
a series spread over several partitions is diffed per partition: each partition's points form
their own baseline and increments, and an interval that crosses partitions is lost or, after a
reset seen on one partition only, counted from that partition's view.

State per series: ``(start_ns, time_ns, total)`` of the last point taken. For a new point:

- **No state** (first point seen by this worker, or after ``forget`` or an eviction): a
  baseline, no increment, as Prometheus's ``rate()`` does with a series' first sample. This is
  where the windows undercount: the first interval of every series after a worker start, a
  rebalance or a re-read. Exception: when the series' ``start_ns`` is later than every point this
  worker has taken on that partition (since it last took or re-read it), the series began while
  the worker was already reading the partition, so its whole total is new: the increment is the
  total (a new process's first interval is not lost). A series whose state was evicted never
  qualifies: its start is at most its last point's time, which the partition has already seen.
  A producer whose clock runs ahead of the partition's other producers by more than a series'
  age could, right after a handover, have that series' first interval counted by both owners:
  the rule trusts timestamps only across that one comparison.
- ``time_ns <= `` the stored ``time_ns``: a replay or an out-of-order point; no increment, the
  state is left as it was.
- **Reset**: ``start_ns`` later than the stored point's ``time_ns`` (the counter restarted
  after that point), or the total went down (a sum below the stored one; a histogram whose count
  or any bucket went down): the increment is the whole new total, counted from zero since the
  new start. A start that moved but not past the stored point (SDKs and receivers that re-derive
  start times jitter them) is not a restart on its own: the totals are diffed, so a jitter never
  counts a series' lifetime again. A decrease is a reset only for monotonic series, which are the
  only ones decode makes cumulative (a non-monotonic sum is windowed as a gauge).
- **Histogram layout change**: when a bucket that held observations at the stored point is
  missing from the new point (other explicit bounds, another exponential scale), the two cannot
  be diffed bucket by bucket: the point becomes the new baseline, no increment (one interval
  lost). New buckets that the stored point did not list count from zero (an exponential
  histogram grows its range this way).
- Otherwise the difference: ``MetricSample(name, total - previous)``, or a ``HistogramSample``
  with the count, sum and per-bucket differences (empty buckets left out). Its ``max`` is the
  point's when the running max went up in this interval (then the interval holds it; likewise
  ``min``), else None and the windows take the extreme buckets' values.

Zero increments are kept: a counter that did not move yields ``MetricSample(name, 0.0)``. The
window's value of a counter is the mean increase per point (mode mean: sum / count), so dropping
the zeros would bias it (and p50) upward, and a stalled counter would look the same as one that
stopped reporting. A zero histogram increment is kept for the same uniformity (every point after
a baseline yields one sample); the windows add nothing for a count of 0.

Memory is bounded: at most ``max_series`` series (default 100,000; measured ~290 bytes each for
a sum plus its series string, a histogram also keeps its last point's buckets),
least recently updated dropped first, counted in ``evictions``. An eviction costs that series
one interval: its next point is a baseline. ``forget`` drops a partition's series when the worker
re-reads it from its stored offset (after a rebalance or a refused batch): the remembered points
may be ahead of what is re-read, which would turn every re-read point into a "replay" and lose
it.

Pure: no I/O, no clock, no logging; one instance per worker, not shared between threads.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final, NamedTuple

import msgspec

from rtmh.records import (
    CumulativeSample,
    Decoded,
    DecodedRecord,
    HistogramSample,
    MetricSample,
    Sample,
)

#: default bound on remembered series (see the module docstring)
DEFAULT_MAX_SERIES: Final = 100_000

Part = tuple[str, int]


class _Point(NamedTuple):
    """The last point taken of a series."""

    start_ns: int
    time_ns: int
    #: a sum's running total, or a histogram's running totals
    total: float | HistogramSample


class CumulativeDeltas:
    """Per-worker memory of cumulative series' last points; see the module docstring."""

    __slots__ = ("_latest", "_points", "evictions", "max_series")

    def __init__(self, max_series: int = DEFAULT_MAX_SERIES) -> None:
        if max_series < 1:
            raise ValueError("max_series must be at least 1")
        self.max_series = max_series
        #: series dropped to stay within max_series since this instance was made
        self.evictions = 0
        #: (partition, series) -> last point, least recently updated first
        self._points: OrderedDict[tuple[Part, str], _Point] = OrderedDict()
        #: partition -> latest time_ns taken on it (for a new series' first point)
        self._latest: dict[Part, int] = {}

    def __len__(self) -> int:
        """The number of series remembered."""
        return len(self._points)

    def convert_message(self, part: Part, results: list[Decoded]) -> list[Decoded]:
        """Each record of one OTLP metrics message converted; rejections pass through."""
        return [self.convert(part, r) if type(r) is DecodedRecord else r for r in results]

    def convert(self, part: Part, record: DecodedRecord) -> DecodedRecord:
        """``record`` with each CumulativeSample replaced by its increment, or removed when
        there is none (baseline, replay, layout change). Other samples are kept in place; a
        record without CumulativeSample is returned as is."""
        samples = record.samples
        # the worker calls this for every OTLP metric record: one `is` per sample when nothing
        # is cumulative (measured 0.15 us a record; 2.3 us with one cumulative sum, 9 us with a
        # 16-bucket histogram)
        for sample in samples:
            if type(sample) is CumulativeSample:
                break
        else:
            return record
        out: list[Sample] = []
        for sample in samples:
            if type(sample) is CumulativeSample:
                increment = self._step(part, sample)
                if increment is not None:
                    out.append(increment)
            else:
                out.append(sample)
        return msgspec.structs.replace(record, samples=tuple(out))

    def forget(self, parts: Iterable[Part]) -> None:
        """Drop what is remembered of the series seen on ``parts``: their next points are
        baselines. O(remembered series): measured 30 ms for 100,000 series, paid only on
        rebalances and refused batches."""
        gone = set(parts)
        if not gone:
            return
        for part in gone:
            self._latest.pop(part, None)
        points = self._points
        for key in [key for key in points if key[0] in gone]:
            del points[key]

    # --- one point -----------------------------------------------------------------------------

    def _step(self, part: Part, sample: CumulativeSample) -> Sample | None:
        """The increment this point gives (None: none), updating the series' state."""
        total: float | HistogramSample
        if sample.histogram is not None:
            total = sample.histogram
        elif sample.value is not None and math.isfinite(sample.value):
            total = sample.value
        else:
            return None  # nothing to diff (decode refuses non-finite totals already)
        key = (part, sample.series)
        points = self._points
        previous = points.get(key)
        latest = self._latest.get(part)
        if latest is None or sample.time_ns > latest:
            self._latest[part] = sample.time_ns
        point = _Point(sample.start_ns, sample.time_ns, total)
        if previous is None:
            self._remember(key, point)
            if latest is not None and sample.start_ns > latest:
                return _whole(sample.name, total)  # began while this worker read the partition
            return None
        if sample.time_ns <= previous.time_ns:
            return None  # replayed or out of order: the stored point is newer
        points[key] = point
        points.move_to_end(key)
        # restarted after the stored point; a start that moved less is jitter (module docstring)
        restarted = sample.start_ns > previous.time_ns
        before = previous.total
        if isinstance(total, HistogramSample):
            if isinstance(before, HistogramSample):
                return _histogram_increment(sample.name, before, total, restarted)
            return None  # the series changed type: the point is a new baseline
        if isinstance(before, HistogramSample):
            return None
        if restarted or total < before:
            return MetricSample(sample.name, total)
        return MetricSample(sample.name, total - before)

    def _remember(self, key: tuple[Part, str], point: _Point) -> None:
        points = self._points
        points[key] = point
        if len(points) > self.max_series:
            points.popitem(last=False)
            self.evictions += 1


def _whole(name: str, total: float | HistogramSample) -> Sample:
    """The increment of a series counted from zero: its whole total."""
    if isinstance(total, HistogramSample):
        return _whole_histogram(name, total)
    return MetricSample(name, total)


def _whole_histogram(name: str, current: HistogramSample) -> HistogramSample:
    return current if current.name == name else msgspec.structs.replace(current, name=name)


def _histogram_increment(
    name: str, previous: HistogramSample, current: HistogramSample, restarted: bool
) -> HistogramSample | None:
    """The observations added since ``previous``; None when the layouts cannot be diffed."""
    if restarted or current.count < previous.count:
        return _whole_histogram(name, current)
    before: dict[float, int] = {}
    for value, count in previous.buckets:
        before[value] = before.get(value, 0) + count
    after: dict[float, int] = {}
    for value, count in current.buckets:
        after[value] = after.get(value, 0) + count
    if any(count > 0 and value not in after for value, count in before.items()):
        return None  # another layout (bounds, scale): cannot be diffed, a new baseline
    buckets: list[tuple[float, int]] = []
    for value, count in after.items():
        added = count - before.get(value, 0)
        if added < 0:
            return _whole_histogram(name, current)  # a bucket went down: a restart
        if added:
            buckets.append((value, added))
    total = None
    if current.sum is not None and previous.sum is not None:
        total = current.sum - previous.sum
    return HistogramSample(
        name,
        current.count - previous.count,
        total,
        _moved(current.min, previous.min, lower=True),
        _moved(current.max, previous.max, lower=False),
        tuple(buckets),
    )


def _moved(current: float | None, previous: float | None, *, lower: bool) -> float | None:
    """The running extreme when it moved in this interval (an observation of the interval set
    it), else None: the interval's own extreme is unknown."""
    if current is None or previous is None:
        return None
    if (current < previous) if lower else (current > previous):
        return current
    return None
