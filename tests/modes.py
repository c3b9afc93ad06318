"""Modes of directories that exist before a test: RTMH must never change one it did not create."""

from __future__ import annotations

import os
import stat
from pathlib import Path

# where the first versions widened modes: every parent of the data dir and of the venv
SYSTEM_DIRS = (Path("/root"), Path("/tmp"), Path("/var"), Path("/var/lib"))


def ancestor_modes(*paths: Path) -> dict[Path, str]:
    """Owner and mode of each existing directory on the way to ``paths`` (themselves included)."""
    modes: dict[Path, str] = {}
    for path in [*paths, *SYSTEM_DIRS]:
        for directory in [path, *path.parents]:
            if directory.is_dir():
                st = directory.stat()
                modes[directory] = f"{st.st_uid}:{st.st_gid} {stat.filemode(st.st_mode)}"
    return modes


def modes_now(before: dict[Path, str]) -> dict[Path, str]:
    """The same directories as ``before``, as they are now."""
    now = ancestor_modes(*before)
    return {path: now.get(path, "gone") for path in before}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def is_root() -> bool:
    return os.geteuid() == 0
