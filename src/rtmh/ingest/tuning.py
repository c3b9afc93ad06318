"""Interpreter settings a running worker needs: the cyclic GC and the GIL switch interval.

Measured by `rtmh bench ingest`; a worker acquires them for its run (``TUNING``) and collects
garbage on its own clock (``GC_SECONDS``).
"""

from __future__ import annotations

import gc
import sys
import threading

#: a full collection this often, from the poll loop, instead of automatic ones
GC_SECONDS = 10.0
#: GIL switch interval while a worker runs (Python's default is 5 ms)
SWITCH_INTERVAL_S = 0.001


class RuntimeTuning:
    """Interpreter settings for as long as at least one worker runs in this process.

    - The cyclic GC: startup objects frozen, automatic collections off, a full collection every
      GC_SECONDS from the loop instead. Each batch holds ~100k tracked objects; automatic
      collections rescanned them (and ~60k startup objects) every few thousand messages. The
      ingest path makes no reference cycles (a batch is freed by reference counting once its
      checkpoint settles), so what waits for the timed collection is the odd traceback.
    - The GIL switch interval, 5 ms -> 1 ms: the checkpoint thread gets the GIL back sooner to
      format the next COPY chunk, so PostgreSQL is not left without rows while the poll loop
      decodes (alone: 143k -> 149k events/s).

    Both together, ingest benchmark (200k events): worker CPU 7.9 -> 5.9 µs an event,
    113k -> 149k events/s (measured, ingest-only worker).

    Counted, so workers running side by side in one process (tests) restore the settings once,
    when the last one stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._gc_was_enabled = True
        self._switch_interval = 0.005

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users > 1:
                return
            self._gc_was_enabled = gc.isenabled()
            self._switch_interval = sys.getswitchinterval()
            gc.collect()
            gc.freeze()
            gc.disable()
            sys.setswitchinterval(SWITCH_INTERVAL_S)

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0:
                return
            sys.setswitchinterval(self._switch_interval)
            gc.unfreeze()
            if self._gc_was_enabled:
                gc.enable()


TUNING = RuntimeTuning()
