"""Retry spacing for failed notifications: capped exponential backoff with jitter.

Pure: the notifier computes ``next_attempt_at = now + next_delay(attempts)`` and stores it, so
the schedule survives restarts and is shared by every notifier process.

Why not tenacity's ``wait_random_exponential``/``wait_exponential_jitter``: they take a
``RetryCallState`` and draw from the global ``random`` module (no injectable generator, so no
reproducible tests), and they serve an in-process retry loop; here the "loop" is a row in
PostgreSQL picked up by whichever notifier is free. The formula itself is a few lines.

Jitter: "equal" by default (half the exponential step fixed, half random). Full jitter spreads
load best but may retry a just-failed receiver almost at once; equal jitter still spreads the
many notifications that fail together when one receiver goes down, while giving that receiver
at least half the backoff to recover. "full" and "none" are there for callers that prefer them.
"""

from __future__ import annotations

import math
import random
from typing import Final, Literal

Jitter = Literal["full", "equal", "none"]

_DEFAULT_RNG: Final = random.Random()


def backoff_ceiling(
    attempt: int, *, base: float = 1.0, factor: float = 2.0, cap: float = 300.0
) -> float:
    """``min(cap, base * factor ** (attempt - 1))``, without overflowing for huge attempts."""
    _check(attempt, base, factor, cap)
    exponent = attempt - 1
    # Compare in log space: factor ** exponent overflows a float long before attempt does.
    if factor == 1.0 or exponent * math.log(factor) < math.log(cap / base):
        return min(cap, base * factor**exponent)
    return cap


def next_delay(
    attempt: int,
    *,
    base: float = 1.0,
    factor: float = 2.0,
    cap: float = 300.0,
    jitter: Jitter = "equal",
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first attempt).

    Bounds: full jitter in ``[0, c]``, equal jitter in ``[c/2, c]``, none exactly ``c``, where
    ``c = backoff_ceiling(attempt, ...)``. A receiver's ``retry_after`` (from Retry-After) is
    honoured as a minimum, itself capped at ``cap`` so a hostile header cannot park a
    notification for days.
    """
    ceiling = backoff_ceiling(attempt, base=base, factor=factor, cap=cap)
    draw = (rng or _DEFAULT_RNG).random()
    if jitter == "full":
        delay = ceiling * draw
    elif jitter == "equal":
        delay = ceiling / 2 + (ceiling / 2) * draw
    elif jitter == "none":
        delay = ceiling
    else:
        raise ValueError(f"jitter must be 'full', 'equal' or 'none', not {jitter!r}")
    if retry_after is not None and math.isfinite(retry_after) and retry_after > 0:
        delay = max(delay, min(retry_after, cap))
    return delay


def _check(attempt: int, base: float, factor: float, cap: float) -> None:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ValueError("attempt must be an integer >= 1")
    if not (math.isfinite(base) and base > 0):
        raise ValueError("base must be a positive number of seconds")
    if not (math.isfinite(factor) and factor >= 1):
        raise ValueError("factor must be >= 1")
    if not (math.isfinite(cap) and cap > 0):
        raise ValueError("cap must be a positive number of seconds")
