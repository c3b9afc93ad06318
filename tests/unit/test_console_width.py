"""Consoles of the `rtmh` command lay output out to the real width; with no terminal anywhere
(a CI log) to a wide one, never rich's 80 columns. Run in a child with no terminal attached."""

from __future__ import annotations

import os
import subprocess
import sys

from rtmh.console import PIPED_WIDTH

_WIDTH = "from rtmh.console import make_console; print(make_console().width)"


def _width_in_child(**env: str) -> int:
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        [sys.executable, "-c", _WIDTH],
        env={**base, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_piped_with_no_terminal_is_wide() -> None:
    assert _width_in_child() == PIPED_WIDTH


def test_columns_wins() -> None:
    assert _width_in_child(COLUMNS="132") == 132
