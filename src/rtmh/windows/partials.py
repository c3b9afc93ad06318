"""Window partials: what one batch of decoded records adds to each sliding window.

Role: the pure core of the window stage. ``build_partials`` turns a batch into one ``Partial`` per
(window_key, metric_type, window_start); ``windows.store`` stages them and upserts them into
metrics_agg in the same transaction as the raw events and offsets. Every field merges additively
(count, sum, sketch buckets) or by min/max, so late events, replays into other batches and any
number of workers all converge on the same rows.

Metric types and their value formula (``mode``; SQL derives the same from metric_type in
rtmh_window_value, migration 003):

=================  =======  ==============================  ==========================
metric_type        mode     count / sum                     value
=================  =======  ==============================  ==========================
log_count          count    log lines / log lines           count
error_count        sum      log lines / error lines         sum (errors; 0 rows exist)
error_rate         ratio    log lines / error lines         sum / count
event_count        count    events / events                 count
<metric name>      mean     samples / sum of values         sum / count (+ min, max,
                                                            sketch -> p50/p95/p99)
=================  =======  ==============================  ==========================

error_count and error_rate get a row for every window that has logs, errors or not, so a rule
``error_count > 0`` sees the zero that resolves it, and ``count`` is the log volume that
``min_count`` checks. A metric sample named like a built-in type is stored as
``metric:<name>`` so the two can never merge into one row.

Samples (``rtmh.records.Sample``) of a metric record:

- ``MetricSample``: one observation (a gauge reading, or a counter's increment made by
  ``ingest.deltas``): count 1, sum += value, min/max, one sketch entry. For a counter's
  increments the window's sum is the counter's increase in the window and its value the mean
  increase per reported point (zero increments included).
- ``HistogramSample`` (an OTLP histogram point, or its increment): ``count`` observations at
  once. Exact: count, sum (when the point carries it) and so the mean, which is the window's
  ``value`` (mode mean, the same SQL formula). Approximate: the quantiles, because each bucket
  enters the sketch as ``count`` copies of its representative value, so p50/p95/p99 are right to
  within the width of the bucket holding the true quantile (plus the sketch's 1 %); a point
  without a sum gets sum(value * count) over its buckets, an estimate of the same kind; a point
  without min/max gets its lowest / highest non-empty bucket's value. Buckets whose value has no
  sketch bucket (``is_indexable`` false) are left out; a point of count 0 (an interval with no
  observations) adds nothing; a sum that is not indexable (NaN, inf) is replaced by that
  estimate; a point without a usable sum whose usable buckets do not hold all its observations
  (or whose estimate is not indexable either) is skipped whole, like a bad gauge reading: it
  must not poison the window's sum or skew its mean.
- ``CumulativeSample``: skipped. The worker turns them into increments (``ingest.deltas``) before
  the windows; a running total counted as an observation would be meaningless.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from rtmh.records import GLOBAL_WINDOW_KEY, DecodedRecord, HistogramSample, Kind, MetricSample
from rtmh.windows.assign import (
    DEFAULT_SIZE,
    DEFAULT_SLIDE,
    pane_start,
    starts_for_pane,
    validate_window,
)
from rtmh.windows.sketch import MAX_INDEXABLE, Sketch, is_indexable

Mode = Literal["count", "sum", "ratio", "mean"]
PartialKey = tuple[str, str, int]

LOG_COUNT = "log_count"
ERROR_COUNT = "error_count"
ERROR_RATE = "error_rate"
EVENT_COUNT = "event_count"
_BUILTIN_MODES: dict[str, Mode] = {
    LOG_COUNT: "count",
    ERROR_COUNT: "sum",
    ERROR_RATE: "ratio",
    EVENT_COUNT: "count",
}
#: prefix for metric samples whose name collides with a built-in metric type
METRIC_PREFIX = "metric:"
#: quantiles stored in metrics_agg.p50 / p95 / p99
QUANTILES = (0.5, 0.95, 0.99)


def mode_for(metric_type: str) -> Mode:
    """The value formula of a metric type (mirrors rtmh_window_mode in SQL)."""
    return _BUILTIN_MODES.get(metric_type, "mean")


def metric_type_for_sample(name: str) -> str:
    """The metric_type a metric sample is windowed under: its name, unless that is reserved."""
    return METRIC_PREFIX + name if name in _BUILTIN_MODES else name


def value_of(mode: Mode, count: int, total: float) -> float | None:
    """The natural aggregate of a window (mirrors rtmh_window_value in SQL)."""
    if mode == "count":
        return float(count)
    if mode == "sum":
        return total
    return total / count if count else None


@dataclass(slots=True)
class Partial:
    """What some records contribute to one window of one (window_key, metric_type)."""

    window_key: str
    metric_type: str
    window_start: int
    window_end: int
    mode: Mode
    count: int = 0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    sketch: Sketch | None = field(default=None)

    @property
    def key(self) -> PartialKey:
        return (self.window_key, self.metric_type, self.window_start)

    @property
    def value(self) -> float | None:
        return value_of(self.mode, self.count, self.sum)

    def percentiles(self) -> tuple[float | None, float | None, float | None]:
        """p50/p95/p99 as metrics_agg stores them: sketch estimates clamped to [min, max]."""
        if self.sketch is None:
            return (None, None, None)
        p50, p95, p99 = (_clamp(q, self.min, self.max) for q in self.sketch.quantiles(QUANTILES))
        return (p50, p95, p99)

    def observe(self, value: float) -> None:
        """Add one metric sample (mode mean)."""
        self.count += 1
        self.sum += value
        if self.min is None or value < self.min:
            self.min = value
        if self.max is None or value > self.max:
            self.max = value
        if self.sketch is None:
            self.sketch = Sketch()
        self.sketch.add(value)

    def observe_histogram(self, sample: HistogramSample) -> None:
        """Add a histogram point's observations (mode mean); see the module docstring for what
        is exact and what is estimated from the buckets."""
        stats = histogram_stats(sample)
        if stats is not None:
            self._add_histogram(stats)

    def _add_histogram(self, stats: HistogramStats) -> None:
        self.count += stats.count
        self.sum += stats.sum
        if stats.min is not None and (self.min is None or stats.min < self.min):
            self.min = stats.min
        if stats.max is not None and (self.max is None or stats.max > self.max):
            self.max = stats.max
        if stats.buckets:
            if self.sketch is None:
                self.sketch = Sketch()
            add = self.sketch.add
            for value, count in stats.buckets:
                add(value, count)

    def merge(self, other: Partial) -> None:
        """Add ``other`` into this partial in place. Both must describe the same window."""
        if other.key != self.key or other.mode != self.mode or other.window_end != self.window_end:
            raise ValueError(f"cannot merge partial {other.key} into {self.key}")
        self.count += other.count
        self.sum += other.sum
        if other.min is not None and (self.min is None or other.min < self.min):
            self.min = other.min
        if other.max is not None and (self.max is None or other.max > self.max):
            self.max = other.max
        if other.sketch is not None:
            if self.sketch is None:
                self.sketch = Sketch()
            self.sketch.merge(other.sketch)

    def copy(self) -> Partial:
        return replace(self, sketch=None if self.sketch is None else self.sketch.copy())


@dataclass(frozen=True, slots=True)
class HistogramStats:
    """What one histogram point adds to a window, its estimates made (see histogram_stats)."""

    count: int
    sum: float
    min: float | None
    max: float | None
    #: the non-empty buckets whose value has a sketch bucket
    buckets: tuple[tuple[float, int], ...]


def histogram_stats(sample: HistogramSample) -> HistogramStats | None:
    """The point's contribution, or None when it adds nothing: no observations (count 0), or no
    usable sum (given and indexable, or else estimated as sum(value * count) over its buckets,
    which needs usable buckets holding all ``count`` observations and an indexable result)."""
    if sample.count <= 0:
        return None
    buckets = tuple((v, c) for v, c in sample.buckets if c > 0 and is_indexable(v))
    total = sample.sum
    if total is None or not is_indexable(total):
        # estimated: every observation taken at its bucket's representative value; buckets that
        # miss some observations would give a mean of the wrong ones
        if sum(c for _, c in buckets) != sample.count:
            return None
        total = math.fsum(v * c for v, c in buckets)
        if not is_indexable(total):
            return None
    low = sample.min if sample.min is not None and is_indexable(sample.min) else None
    high = sample.max if sample.max is not None and is_indexable(sample.max) else None
    if buckets and low is None:
        low = min(v for v, _ in buckets)
    if buckets and high is None:
        high = max(v for v, _ in buckets)
    return HistogramStats(sample.count, total, low, high, buckets)


def _clamp(value: float | None, low: float | None, high: float | None) -> float | None:
    # the true quantile lies in [min, max], so clamping never adds error; SQL does the same
    if value is None:
        return None
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return value


def merge_partials(a: Partial, b: Partial) -> Partial:
    """A new partial holding both (pure; neither argument changes)."""
    merged = a.copy()
    merged.merge(b)
    return merged


def merge_partial_maps(
    a: Mapping[PartialKey, Partial], b: Mapping[PartialKey, Partial]
) -> dict[PartialKey, Partial]:
    """Union of two build_partials results, merging shared keys (pure)."""
    merged = {key: partial.copy() for key, partial in a.items()}
    _merge_into(merged, b.values())
    return merged


def _merge_into(target: dict[PartialKey, Partial], partials: Iterable[Partial]) -> None:
    for partial in partials:
        existing = target.get(partial.key)
        if existing is None:
            target[partial.key] = partial.copy()
        else:
            existing.merge(partial)


def _slot(
    panes: dict[PartialKey, Partial], service: str, metric_type: str, pane: int, slide: int
) -> Partial:
    key = (service, metric_type, pane)
    partial = panes.get(key)
    if partial is None:
        partial = Partial(service, metric_type, pane, pane + slide, mode_for(metric_type))
        panes[key] = partial
    return partial


def _bump(partial: Partial, count: int, total: float) -> None:
    partial.count += count
    partial.sum += total


def _add_record(panes: dict[PartialKey, Partial], record: DecodedRecord, slide: int) -> None:
    pane = pane_start(record.event_time, slide)
    service = record.service
    if record.kind is Kind.LOGS:
        errors = 1.0 if record.is_error else 0.0
        _bump(_slot(panes, service, LOG_COUNT, pane, slide), 1, 1.0)
        _bump(_slot(panes, service, ERROR_COUNT, pane, slide), 1, errors)
        _bump(_slot(panes, service, ERROR_RATE, pane, slide), 1, errors)
    elif record.kind is Kind.METRICS:
        for sample in record.samples:
            # exact type checks, MetricSample first: the native JSON path pays one `is` per sample
            if type(sample) is MetricSample:
                value = sample.value
                # decode should refuse NaN/inf already; one must not poison a window's sum or
                # fail the batch's merge (PostgreSQL raises on float overflow), so such samples
                # are skipped (is_indexable, inlined: this loop runs once per sample)
                if -MAX_INDEXABLE <= value <= MAX_INDEXABLE:
                    metric_type = metric_type_for_sample(sample.name)
                    _slot(panes, service, metric_type, pane, slide).observe(value)
            elif type(sample) is HistogramSample:
                # stats first: a point that adds nothing must not open an empty (count 0) row
                stats = histogram_stats(sample)
                if stats is not None:
                    metric_type = metric_type_for_sample(sample.name)
                    _slot(panes, service, metric_type, pane, slide)._add_histogram(stats)
            # a CumulativeSample is skipped: ingest.deltas converts them before the windows
    elif record.kind is Kind.EVENTS:
        _bump(_slot(panes, service, EVENT_COUNT, pane, slide), 1, 1.0)


def pane_partials(
    records: Iterable[DecodedRecord], slide: int, global_key: str = GLOBAL_WINDOW_KEY
) -> dict[PartialKey, Partial]:
    """Partials per slide-wide pane (window_start = pane start, window_end = pane + slide).

    Each record touches one pane per metric type, so the work per record does not grow with
    size / slide; the global key is the merge of the services' panes.
    """
    validate_window(slide, slide)
    panes: dict[PartialKey, Partial] = {}
    for record in records:
        if record.windowed:
            _add_record(panes, record, slide)
    global_panes: dict[PartialKey, Partial] = {}
    _merge_into(global_panes, (replace(p, window_key=global_key) for p in panes.values()))
    # global_panes wins on shared keys: a service named like the global key is counted once
    return panes | global_panes


def build_partials(
    records: Iterable[DecodedRecord],
    size: int = DEFAULT_SIZE,
    slide: int = DEFAULT_SLIDE,
    global_key: str = GLOBAL_WINDOW_KEY,
) -> dict[PartialKey, Partial]:
    """Partials of every window [start, start + size) the windowed records fall in.

    Keys are (window_key, metric_type, window_start); window_key is each record's service and
    ``global_key``. Records flagged out of range (``record.windowed`` false) are skipped.
    """
    validate_window(size, slide)
    windows: dict[PartialKey, Partial] = {}
    for (window_key, metric_type, pane), partial in pane_partials(
        records, slide, global_key
    ).items():
        for start in starts_for_pane(pane, size, slide):
            key = (window_key, metric_type, start)
            existing = windows.get(key)
            if existing is None:
                windows[key] = replace(partial.copy(), window_start=start, window_end=start + size)
            else:
                existing.merge(replace(partial, window_start=start, window_end=start + size))
    return windows
