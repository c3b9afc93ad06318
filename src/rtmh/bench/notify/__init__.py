"""`rtmh bench notify`: incident committed -> webhook received, p50/p99 (issue 5: p99 < 500 ms).

One run:

1. PostgreSQL: POSTGRES_URL when set (a fresh database is created there and dropped after),
   else an embedded server with durable settings (fsync and synchronous commit on, as `rtmh up`).
2. A webhook receiver on loopback (:mod:`rtmh.bench.receiver`, HMAC checked) and an HMAC-signed
   webhook channel pointing at it.
3. The real notifier, ``rtmh notifier`` (``python -m rtmh.cli notifier``, its settings from
   ``Settings.to_env``), in a process of its own (as in production: it shares no interpreter
   with the producer or the receiver).
4. A few warm-up notifications (process start, first connections), not counted.
5. N incidents, each with its outbox row, inserted in separate committed transactions spaced
   ``interval_ms`` apart (what the rules engine does); ``time.time()`` right after each COMMIT
   returns is compared with the receiver's ``time.time()`` on arrival of that notification.

The commit timestamp is taken after COMMIT returns, so the figures slightly under-state the true
latency by at most the commit's own round trip (tens of microseconds on loopback); the receiver's
timestamp is taken once the body is read.

The modules: ``run`` (servers, receiver, notifier, paced commits), ``measure`` (arrivals ->
figures), ``render`` (tables), ``command`` (the `rtmh bench notify` options).
"""

from __future__ import annotations

from rtmh.bench.notify.command import register
from rtmh.bench.notify.measure import summarise
from rtmh.bench.notify.render import render
from rtmh.bench.notify.run import run

__all__ = ["register", "render", "run", "summarise"]
