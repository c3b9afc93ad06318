"""The rich consoles every command prints through, sized for where the output goes.

Rich lays tables out to the console width. With a terminal on any standard stream it uses that
terminal's width (so `rtmh ... | tee run.log` still fits the screen). With none (a CI log, a
file, a test) it falls back to 80 columns and breaks every wide label over several lines; there
nobody's screen is the limit, so these consoles use PIPED_WIDTH instead. COLUMNS, when set, wins.
"""

from __future__ import annotations

import os

from rich.console import Console

#: width when no standard stream is a terminal: wider than any table RTMH prints, narrow enough
#: that a panel or rule drawn to full width stays readable in a log viewer
PIPED_WIDTH = 200


def _terminal_width() -> int | None:
    for fd in (0, 1, 2):
        try:
            columns = os.get_terminal_size(fd).columns
        except (OSError, ValueError):
            continue
        if columns:
            return columns
    return None


def output_width() -> int | None:
    """The width to lay output out to; None = rich's own choice (a terminal's, or COLUMNS)."""
    if os.environ.get("COLUMNS", "").isdigit() or _terminal_width() is not None:
        return None
    return PIPED_WIDTH


def make_console(*, stderr: bool = False) -> Console:
    """A Console on stdout (or stderr) that wraps at the real width, or PIPED_WIDTH when piped
    with no terminal anywhere."""
    return Console(stderr=stderr, width=output_width())
