"""The detection benchmark's clock on the hub: when each incident commit became visible."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from rtmh.bench.common import SQL
from rtmh.bench.detect.model import POLL_S, IncidentEvent
from rtmh.embedded.log_roll import RollOutcome


class Committed:
    """Messages the worker's group has committed: its next offsets, plus every message a roll of
    the embedded broker's log took away (a roll moves the offsets back to 0 of the new logs).

    Never goes backwards: between the roll's commit and its report the offsets alone read low."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.rolled_away = 0
        self._last = 0
        self._lock = threading.Lock()

    def rolled(self, outcome: RollOutcome) -> None:
        """A roll's report (on the roller's thread)."""
        if outcome.rolled:
            with self._lock:
                self.rolled_away += outcome.messages

    def read(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(SQL.committed_offsets, (self.group,)).fetchone()
        with self._lock:
            self._last = max(self._last, (int(row[0]) if row else 0) + self.rolled_away)
            return self._last


class Watcher(threading.Thread):
    """LISTENs for the outbox NOTIFY (sent at commit) and polls as a fallback; records when each
    opened/reopened/resolved timeline row of the rule became visible. Also samples lag."""

    def __init__(
        self, url: str, rule_id: int, committed: Committed, produced: Callable[[], int]
    ) -> None:
        super().__init__(name="bench-detect-watcher", daemon=True)
        self.url = url
        self.rule_id = rule_id
        self.counter = committed
        self.produced = produced
        self.events: list[IncidentEvent] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.committed = 0
        self.max_lag = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _loop(self) -> None:
        last_id = 0
        next_lag = 0.0
        with (
            psycopg.connect(self.url, autocommit=True) as listen,
            psycopg.connect(self.url, autocommit=True) as query,
        ):
            listen.execute(SQL.listen_outbox)
            while not self.stop_event.is_set():
                woke: float | None = None
                for _ in listen.notifies(timeout=POLL_S, stop_after=1):
                    woke = time.time()
                rows = query.execute(SQL.new_incident_events, (last_id, self.rule_id)).fetchall()
                seen = woke if woke is not None else time.time()
                via = "notify" if woke is not None else "poll"
                fresh = [_event(row, seen, via) for row in rows]
                if fresh:
                    last_id = max(last_id, *(e.id for e in fresh))
                    with self.lock:
                        self.events.extend(fresh)
                now = time.monotonic()
                if now >= next_lag:
                    next_lag = now + 0.5
                    self._sample_lag(query)

    def _sample_lag(self, query: psycopg.Connection[Any]) -> None:
        produced = self.produced()
        self.committed = self.counter.read(query)
        self.max_lag = max(self.max_lag, produced - self.committed)

    def snapshot(self) -> list[IncidentEvent]:
        with self.lock:
            return list(self.events)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def _event(row: tuple[Any, ...], seen: float, via: str) -> IncidentEvent:
    event_id, service, kind, created, details, incident = row
    d: dict[str, Any] = details or {}
    return IncidentEvent(
        id=int(event_id),
        service=str(service),
        event_type=str(kind),
        created_at=float(created),
        seen_at=seen,
        via=via,
        incident_id=str(incident),
        evaluated_at=_float(d.get("evaluated_at")),
        window={k: d.get(k) for k in ("window_start", "window_end", "count", "sum", "value")},
    )


def _float(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None
