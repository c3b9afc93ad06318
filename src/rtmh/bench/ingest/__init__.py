"""`rtmh bench ingest`: end-to-end ingest throughput beside what PostgreSQL itself can take.

One run, on one set of servers (issue 3, item 8):

1. N realistic messages from ``rtmh.simulate.Traffic`` (request logs, latency samples, host gauges;
   event time advancing at EVENT_RATE messages/s) are produced to fresh topics.
2. **COPY ceiling**: the rows the worker writes (same columns and values, same partition and
   offset), formatted by the worker's own formatter before the clock starts, COPYed into
   raw_events of a fresh database with no Kafka, one transaction per batch of the worker's batch
   size. Run before and after the workers; the faster run counts, so drift never flatters the
   worker.
3. **Worker**: ``rtmh worker`` as it runs in production (``rtmh.worker.build_worker``: windows
   merged in the checkpoint transaction, rules evaluated after it) in a subprocess of its own,
   into a fresh database, timed from the first message it receives to the commit holding the
   last one.
   Its peak RSS is the kernel's high-water mark (VmHWM), with a 20 ms psutil sample beside it.
   Then the same with windows but no rules engine, and a plain ``Worker`` (no window stage): the
   ingest stage alone, which issue 3's ">= 70 % of the ceiling" is about (the whole worker is
   held to it too), and the base of issue 4's "aggregation adds <= 15 %" (windows vs plain).
   Each worker's database is dropped once measured, so autovacuum working through its rows
   never runs during a later phase.
4. **OTLP** (issue 20): the same steady traffic as OpenTelemetry export requests (``otlp-proto``
   and ``otlp-json``, ``--format``), ``--events`` records each, through the whole worker; reported
   as records (raw_events rows) per second beside the JSON worker's rows per second.
5. **Naive consumer**: one INSERT and one commit per message (confluent-kafka poll + psycopg), run
   for min(N, NAIVE_MAX) messages and reported as a rate: per message, it does not depend on N.

Every worker run is checked against PostgreSQL afterwards (rows + dead letters = N), and reports
where its time went: the checkpoint thread's busy time and the poll loop's waits for it.
RTMH_BENCH_PROFILE=/path/prefix writes a cProfile of each worker run's poll loop (prefix.VARIANT).

Modules: ``traffic`` (the workload), ``run`` (the phases and their figures), ``workers`` (one
worker run, watched and checked), ``otlp`` (the OTLP runs), ``child`` (the worker subprocess,
``python -m rtmh.bench.ingest``), ``render`` (tables and JSON).
"""

from rtmh.bench.ingest.render import render
from rtmh.bench.ingest.run import run

__all__ = ["render", "run"]
