"""Histogram buckets -> (representative value, count) pairs for the windows' quantile sketches.

A bucket says only that its observations fell somewhere in a range; the windows need a value per
observation, so each bucket stands for one value. This is where histogram quantiles are
approximate: by up to half a bucket's width (explicit; the open-ended first and last buckets by
up to the distance to the point's min / max, unbounded without them), or by a factor of up to
``2**(2**-scale / 2)`` (exponential: 4.4% at scale 3, 0.14% at scale 8).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

Buckets = tuple[tuple[float, int], ...]

#: scales the OTLP data model allows for exponential histograms
MIN_SCALE = -10
MAX_SCALE = 20


def explicit(
    bounds: Sequence[float],
    counts: Sequence[int],
    low: float | None,
    high: float | None,
    total: float | None,
) -> Buckets:
    """Explicit bounds b0 < b1 < ...: bucket i covers (b[i-1], b[i]] and stands for its midpoint;
    the first, (-inf, b0], for the point's min when given and below b0, else b0; the last,
    (b[-1], +inf), for the max when given and above b[-1], else b[-1]. Without bounds (one bucket
    for everything): the mean, sum / count, when the sum is given. Empty buckets are left out.
    ``counts`` has len(bounds) + 1 entries (the caller checks)."""
    if not bounds:
        count = counts[0] if counts else 0
        if count > 0 and total is not None:
            return ((total / count, count),)
        return ()
    last = len(bounds)
    out: list[tuple[float, int]] = []
    for i, count in enumerate(counts):
        if count <= 0:
            continue
        if i == 0:
            value = low if low is not None and low < bounds[0] else bounds[0]
        elif i == last:
            value = high if high is not None and high > bounds[-1] else bounds[-1]
        else:
            value = (bounds[i - 1] + bounds[i]) / 2
        out.append((value, count))
    return tuple(out)


def exponential(
    scale: int,
    zero_count: int,
    positive: tuple[int, Sequence[int]],
    negative: tuple[int, Sequence[int]],
) -> Buckets:
    """Base ``2**(2**-scale)``; bucket index i covers (base**i, base**(i+1)] and stands for the
    geometric midpoint base**(i + 0.5); negative buckets mirror it; the zero bucket stands for
    0.0. Raises OverflowError when a bucket lies beyond the float range (the caller flags it)."""
    step = 2.0**-scale
    out: list[tuple[float, int]] = []
    offset, counts = negative
    for k, count in enumerate(counts):
        if count > 0:
            out.append((-(2.0 ** ((offset + k + 0.5) * step)), count))
    if zero_count > 0:
        out.append((0.0, zero_count))
    offset, counts = positive
    for k, count in enumerate(counts):
        if count > 0:
            out.append((2.0 ** ((offset + k + 0.5) * step), count))
    return tuple(out)


def strictly_increasing(bounds: Sequence[float]) -> bool:
    return all(math.isfinite(b) for b in bounds) and all(
        a < b for a, b in itertools.pairwise(bounds)
    )
