"""Event-time sliding-window assignment: which windows [start, start + size) hold a timestamp.

Role: the pure arithmetic under the window stage. Windows are aligned to the Unix epoch, so every
worker assigns the same event to the same windows without coordinating, and window starts are
whole seconds (metrics_agg.window_start). A window of size W sliding by S is the union of W / S
consecutive "panes" [p, p + S); an event belongs to exactly one pane, and to the W / S windows
that contain that pane.
"""

from __future__ import annotations

import math

DEFAULT_SIZE = 60
DEFAULT_SLIDE = 10


def validate_window(size: int, slide: int) -> None:
    """Raise ValueError unless size and slide are positive ints and size is a multiple of slide."""
    for name, value in (("size", size), ("slide", slide)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"window {name} must be an int number of seconds, got {value!r}")
        if value <= 0:
            raise ValueError(f"window {name} must be positive, got {value}")
    if size % slide:
        raise ValueError(
            f"window size ({size} s) must be a positive multiple of the slide ({slide} s), "
            "so that every window is a whole number of panes"
        )


def pane_start(t: float, slide: int) -> int:
    """Start of the slide-wide pane holding event time ``t`` (epoch seconds, t >= 0).

    Floors to whole seconds first: pane boundaries are integers, so floor(t) lies in the same
    pane as t, and integer modulo avoids float division rounding t/slide up across a boundary
    (at epoch ~1.7e9 a float quotient can land on the next integer).
    """
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"event time must be a finite, non-negative epoch value, got {t!r}")
    second = math.floor(t)
    return second - second % slide


def starts_for_pane(pane: int, size: int, slide: int) -> range:
    """Starts of the windows that contain the pane starting at ``pane``, oldest first.

    Windows would start before the epoch for panes in the first ``size`` seconds; those starts
    are dropped, so every start is >= 0 (metrics_agg never sees a pre-1970 window).
    """
    return range(max(0, pane - size + slide), pane + 1, slide)


def window_starts(t: float, size: int = DEFAULT_SIZE, slide: int = DEFAULT_SLIDE) -> range:
    """Starts (epoch seconds) of every window [start, start + size) containing ``t``.

    A ``t`` exactly on a boundary belongs to the window starting there, not to the one ending
    there (windows are half-open). Raises ValueError for an invalid size/slide or a negative,
    NaN or infinite ``t``.
    """
    validate_window(size, slide)
    return starts_for_pane(pane_start(t, slide), size, slide)
