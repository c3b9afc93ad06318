"""A rule's condition: whether a value crosses a threshold, and which of two values is worse.

Pure and imported by both :mod:`rtmh.rules.model` (validation) and the evaluation and lifecycle
modules; it imports neither, so none of them imports another in a circle.
"""

from __future__ import annotations

import math
from typing import Final, Literal, TypeAlias, assert_never

__all__ = [
    "CONDITIONS",
    "EQUALITY_ABS_TOL",
    "EQUALITY_REL_TOL",
    "Condition",
    "crosses",
    "worse",
]

Condition: TypeAlias = Literal[">", ">=", "<", "<=", "==", "!="]
CONDITIONS: Final[tuple[Condition, ...]] = (">", ">=", "<", "<=", "==", "!=")

#: == and != compare with this relative tolerance: window values are float sums and ratios
#: (0.1 + 0.2 != 0.3), so exact equality would make == rules fire at random.
EQUALITY_REL_TOL: Final = 1e-9
#: ... and this absolute one, so that a threshold of 0 is not compared relatively to itself.
EQUALITY_ABS_TOL: Final = 1e-12


def crosses(condition: Condition, observed: float, threshold: float) -> bool:
    """Whether ``observed <condition> threshold`` holds.

    Ordering conditions compare exactly. ``==`` and ``!=`` use :func:`math.isclose` with
    :data:`EQUALITY_REL_TOL` / :data:`EQUALITY_ABS_TOL`, because window values are float sums.
    """
    match condition:
        case ">":
            return observed > threshold
        case ">=":
            return observed >= threshold
        case "<":
            return observed < threshold
        case "<=":
            return observed <= threshold
        case "==":
            return _close(observed, threshold)
        case "!=":
            return not _close(observed, threshold)
        case unreachable:
            assert_never(unreachable)


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=EQUALITY_REL_TOL, abs_tol=EQUALITY_ABS_TOL)


def worse(condition: Condition, threshold: float, candidate: float, current: float) -> bool:
    """Whether ``candidate`` is further on the bad side of ``condition threshold`` than
    ``current`` (the peak of an incident is its worst value)."""
    match condition:
        case ">" | ">=":
            return candidate > current
        case "<" | "<=":
            return candidate < current
        case "!=":
            return abs(candidate - threshold) > abs(current - threshold)
        case "==":
            # Every firing value equals the threshold: there is no "worse".
            return False
        case unreachable:
            assert_never(unreachable)
