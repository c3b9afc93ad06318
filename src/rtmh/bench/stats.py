"""The statistics every benchmark reports: percentiles the way numpy computes them by default,
and the least-squares slope the soaks judge memory by."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, in any order: linear interpolation between the
    closest ranks (numpy's default). Raises ValueError without values."""
    return _ranked(sorted(values), q)


def _ranked(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        raise ValueError("no values")
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def distribution(values: Sequence[float], quantiles: Sequence[float]) -> dict[str, float]:
    """min, one ``pNN`` per quantile (0.95 -> p95), max and mean of ``values`` (not empty)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    out = {"min": ordered[0]}
    for q in quantiles:
        out[f"p{round(q * 100)}"] = _ranked(ordered, q)
    out["max"] = ordered[-1]
    out["mean"] = sum(ordered) / len(ordered)
    return out


def slope(points: Sequence[tuple[float, float]], per: float = 1.0) -> float | None:
    """Least-squares slope of y over x, times ``per`` (MB per 10 min: ``per=600``); None for
    fewer than three points or no spread in x."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    return round(sum((x - mx) * (y - my) for x, y in points) / var * per, 2)
