"""Files and directories RTMH creates for itself: private to the user who runs it.

Anything that already exists keeps its owner and mode: RTMH never changes a directory it did not
create (a user's home, a checkout, a temp dir), because widening one silently exposes everything
under it to every local account.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a directory: it and any missing parents are created 0700, existing ones are
    left as they are (``Path.mkdir(parents=True)`` would create the parents 0755)."""
    missing: list[Path] = []
    current = path.absolute()
    while not current.is_dir():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=PRIVATE_DIR_MODE)
    return path


def open_private_log(path: Path) -> BinaryIO:
    """Append to ``path``, creating it 0600: server logs can quote SQL, and SQL can hold secrets."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")
