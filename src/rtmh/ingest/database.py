"""The worker's one PostgreSQL connection, and the rule for using it: retried while PostgreSQL is
unavailable, given up only when the worker stops.

A worker never fails on a database outage: it waits and resumes where its last commit ended. Data
errors are not retried here (the checkpoint's safety net isolates them); lost connections, a
server restarting and refused connections are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_when_event_set,
    wait_exponential,
)

from rtmh.db.connect import DatabaseUnavailable, connect, describe_url
from rtmh.ingest import metrics

log = logging.getLogger(__name__)

#: what an outage looks like from psycopg: retried, never a reason to stop
UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, OSError, DatabaseUnavailable)


class Database:
    """One connection, reopened after a failure. Used by the poll loop and the checkpoint
    thread, never at the same time: the loop touches it only after the checkpoint settled."""

    def __init__(self, url: str, stop: threading.Event) -> None:
        self.url = url
        self._stop = stop
        self._conn: psycopg.Connection | None = None

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.url, autocommit=True)
        return self._conn

    def run(self, what: str, action: Callable[[psycopg.Connection], object]) -> bool:
        """Run ``action`` until it succeeds; False when the worker stops while PostgreSQL is
        still unavailable (``what`` names the work in the log)."""
        retrying = Retrying(
            retry=retry_if_exception_type(UNAVAILABLE),
            wait=wait_exponential(multiplier=0.2, min=0.2, max=5.0),
            stop=stop_when_event_set(self._stop),
            sleep=self._sleep,
            before_sleep=lambda state: self._unavailable(what, state),
        )
        try:
            retrying(lambda: action(self.connection()))
            return True
        except RetryError as gave_up:
            err = gave_up.last_attempt.exception()
            log.error("stopping with PostgreSQL unreachable; %s not done (%s)", what, err)
            return False

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)  # a stop ends the wait at once

    def _unavailable(self, what: str, state: RetryCallState) -> None:
        metrics.DB_RETRIES.inc()
        self._conn = None
        err = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning(
            "PostgreSQL at %s unavailable during %s (%s); retrying in %.1f s",
            describe_url(self.url),
            what,
            " ".join(str(err).split())[:200],
            delay,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
