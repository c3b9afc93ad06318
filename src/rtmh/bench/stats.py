"""The statistics every benchmark reports: percentiles the way numpy computes them by default."""

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
