"""Ingest throughput for the API's live stream: a gauge NOTIFYed on ``rtmh_stream`` once a second.

The checkpoint's after-commit hook only adds a batch's counts to three integers (no I/O on the
ingest path); a thread of its own publishes them, as rates, with ``SELECT pg_notify(...)`` on an
autocommit connection of its own. Never inside the ingest transaction: a NOTIFY takes a
cluster-wide lock at commit, which would serialise every checkpoint behind it.

The payload (``{"kind": "ingest", ...}``) is what :class:`rtmh.api.stream.Broadcaster` tells
from a row id and forwards as ``event: ingest``: ``at`` (ISO time), ``events_per_s`` and
``dead_letters_per_s`` (committed, over the last interval), ``batches`` (committed in it),
``lag`` (the sum of the ``rtmh_ingest_consumer_lag`` gauge, refreshed every few seconds by the
poll loop; null before the first refresh) and ``worker`` (host:pid, to tell workers apart).
A gauge is lossy by nature: while PostgreSQL is unreachable the figures are dropped, not queued.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

from rtmh.db.connect import normalise_url
from rtmh.ingest import metrics
from rtmh.ingest.batch import Batch
from rtmh.records import WindowKey

log = logging.getLogger(__name__)

CHANNEL: Final = "rtmh_stream"
#: NOTIFY payloads are limited to 8000 bytes; ours is a few dozen
_NOTIFY: Final = "SELECT pg_notify('rtmh_stream', %s)"


def total_lag() -> int | None:
    """The sum of rtmh_ingest_consumer_lag over this process's partitions (None: not yet set)."""
    samples = [s.value for family in metrics.LAG.collect() for s in family.samples]
    return int(sum(samples)) if samples else None


class ThroughputPublisher:
    """Counts committed batches (``after_commit``) and publishes their rates every
    ``interval_s`` from its own thread (``start``/``stop``)."""

    def __init__(
        self,
        postgres_url: str,
        *,
        interval_s: float = 1.0,
        lag: Callable[[], int | None] = total_lag,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.postgres_url = normalise_url(postgres_url)
        self.interval_s = interval_s
        self.lag = lag
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._events = 0
        self._dead_letters = 0
        self._batches = 0
        self._since = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self._failing = False

    # --- the checkpoint's side: cheap ----------------------------------------------------------
    def after_commit(self, batch: Batch, _touched: set[WindowKey]) -> None:
        """The checkpoint's after-commit hook (``rtmh.ingest.checkpoint.AfterCommit``)."""
        with self._lock:
            self._events += len(batch.records)
            self._dead_letters += len(batch.rejected)
            self._batches += 1

    # --- the publishing side -------------------------------------------------------------------
    def sample(self) -> dict[str, Any]:
        """The figures since the last sample (and start counting afresh)."""
        now = self.clock()
        with self._lock:
            events, dead, batches = self._events, self._dead_letters, self._batches
            self._events = self._dead_letters = self._batches = 0
            elapsed, self._since = now - self._since, now
        per_s = 1 / elapsed if elapsed > 0 else 0.0
        return {
            "kind": "ingest",
            "at": datetime.now(UTC).isoformat(),
            "events_per_s": round(events * per_s, 1),
            "dead_letters_per_s": round(dead * per_s, 1),
            "batches": batches,
            "lag": self.lag(),
            "worker": self.worker,
        }

    def publish(self) -> bool:
        """Sample and NOTIFY once; False when PostgreSQL could not be reached (the sample is
        dropped: a gauge has nothing to catch up on)."""
        payload = json.dumps(self.sample(), separators=(",", ":"))
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.postgres_url,
                    autocommit=True,
                    connect_timeout=5,
                    application_name="rtmh-ingest-throughput",
                )
            self._conn.execute(_NOTIFY, (payload,))
        except psycopg.Error as err:
            if not self._failing:  # once per outage, not once a second
                log.warning("ingest throughput not published: %s", " ".join(str(err).split()))
            self._failing = True
            self._close()
            return False
        if self._failing:
            log.info("ingest throughput published again")
        self._failing = False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rtmh-throughput", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                self.publish()
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
