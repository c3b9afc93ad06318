"""`rtmh bench detect`: how long an error burst takes to become a committed incident (issue 4).

One run, on one set of servers (embedded unless POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS are set):

1. A fresh migrated database where only ``high_error_rate`` is enabled (its threshold, min_count
   and recovery threshold as shipped; resolve period shortened so a service can burst again), fresh
   topics, and the real worker (``rtmh worker``: windows in the ingest transaction, the rules
   engine on its thread) in a process of its own, with the default windows unless
   RTMH_WINDOW_SIZE_S / RTMH_WINDOW_SLIDE_S say otherwise.
2. Steady background traffic at ``--rate`` messages/s over ``--services`` services: per request
   one log line (``--base-errors`` of them errors, 0.5 % by default) and one latency sample,
   like ``rtmh simulate``.
3. ``--bursts`` error bursts, one after the other, each on the next service in turn: for
   BURST_SECONDS the service's log lines are errors with probability ``--burst-errors``, at
   ``--burst-factor`` times its normal log rate. Gaps between bursts are random, so bursts start
   at every phase of the window slide (that phase decides how much data the newest window holds).
4. Two clocks per burst, both on this machine's wall clock (PostgreSQL runs here too):
   - **first burst error -> incident committed**: from ``time.time()`` just before the first error
     line of the burst was handed to the producer, to the moment the incident's commit became
     visible (its outbox row's NOTIFY, delivered at commit, wakes a LISTENing connection here;
     a 20 ms poll is the fallback).
   - **condition true -> incident committed** (the hub's own delay): from the produce time of the
     burst line after which the rule's condition held, computed here from every line produced
     exactly as the engine judges it (newest window of that service holding at least min_count
     lines; its error_rate above the threshold), to the same commit.
   Their difference (first error -> condition true) is a property of the traffic and the rule,
   not of the hub: a 50 % burst at the service's normal rate needs up to one slide's worth of
   data before the newest window crosses 5 %.
   The hub's delay is split into stages from timestamps PostgreSQL and the engine record: the
   trigger line's ingest transaction (raw_events.created_at), the evaluation that fired
   (incident_events.details.evaluated_at), the incident transaction's start (its created_at).

Incidents opened on a service with no burst in progress are counted as unexpected opens (noise
of thin windows, or flapping after a burst) and listed in the JSON; a burst that starts while its
service already has a live incident cannot open one and is reported as masked, not as missed.
The JSON's ``diagnostics`` hold what explains the figures: the worker's ingest transactions over
the measured span (size, spacing, age of their oldest and newest message) and per-table write
and autovacuum counts; ``background`` has the rates, the lag and the CPU each part of the run used.

The modules, in the order a run uses them: ``model`` (parameters, bursts, stages), ``traffic``
(`rtmh simulate`'s generator with a burst scenario, watched line by line), ``watcher`` (the
commit clock), ``run`` (servers, worker, traffic, drain), ``measure`` (observations -> figures),
``render`` (tables), ``command`` (the `rtmh bench detect` options).
"""

from __future__ import annotations

from rtmh.bench.detect.command import register
from rtmh.bench.detect.model import DetectConfig, schedule
from rtmh.bench.detect.render import render
from rtmh.bench.detect.run import run

__all__ = ["DetectConfig", "register", "render", "run", "schedule"]
