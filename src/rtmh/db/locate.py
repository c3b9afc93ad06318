"""Which PostgreSQL a command uses: POSTGRES_URL, else the database of the `rtmh up` running on
RTMH_DATA_DIR, else the embedded server, started for as long as the command runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from rtmh.config import Settings
from rtmh.db.connect import DatabaseUnavailable


@contextmanager
def database(settings: Settings, console: Console) -> Iterator[str]:
    if settings.postgres_url:
        yield settings.postgres_url
        return
    from rtmh.embedded.postgres import EmbeddedPostgres
    from rtmh.up.running import running_hub

    hub = running_hub(settings.data_dir)
    if hub is not None:
        yield hub.postgres_url
        return
    server = EmbeddedPostgres(settings.data_dir / "postgres")
    with console.status(f"starting embedded PostgreSQL in {server.root}"):
        try:
            url = server.start()
        except (RuntimeError, OSError) as err:
            raise DatabaseUnavailable(f"embedded PostgreSQL did not start: {err}") from None
    try:
        yield url
    finally:
        server.stop()
