"""What a running `rtmh up` tells other commands on the same machine: where its database and
API are, and the local admin token it made.

`rtmh token`, `rtmh incidents` and the other commands run while `up` holds the embedded
PostgreSQL: without POSTGRES_URL they use that server instead of trying to start a second one
on the same data directory. The files are private (0600): the URL carries the password.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rtmh.embedded.files import PRIVATE_FILE_MODE, private_dir
from rtmh.embedded.process import read_live_pid

HUB_FILE = "hub.json"
TOKEN_FILE = "api-token"
#: the name of the admin token `up` makes for the local user; each start revokes the previous
LOCAL_TOKEN_NAME = "local-admin"


@dataclass(frozen=True, slots=True)
class RunningHub:
    postgres_url: str
    api_url: str


def _write_private(path: Path, text: str) -> None:
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def announce(run_dir: Path, hub: RunningHub, token: str) -> Path:
    """Write the hub's whereabouts and its local admin token; returns the token file."""
    _write_private(run_dir / HUB_FILE, json.dumps(asdict(hub)))
    token_file = run_dir / TOKEN_FILE
    _write_private(token_file, token + "\n")
    return token_file


def withdraw(run_dir: Path) -> None:
    for name in (HUB_FILE, TOKEN_FILE):
        (run_dir / name).unlink(missing_ok=True)


def running_hub(data_dir: Path) -> RunningHub | None:
    """The `rtmh up` running on ``data_dir``, if one is (its pid file names a live process)."""
    run_dir = data_dir / "run"
    if read_live_pid(run_dir / "up.pid") is None:
        return None
    try:
        fields = json.loads((run_dir / HUB_FILE).read_text())
        return RunningHub(postgres_url=fields["postgres_url"], api_url=fields["api_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
