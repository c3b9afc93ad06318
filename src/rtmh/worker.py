"""One consumer-group member, composed: Kafka -> ingest (stage 1) -> windows (stage 2) -> rules
(stage 3).

The stages never import each other forwards; this module wires them. The ingest checkpoint carries
the windows stage's writes in its transaction (``window_stage``: records in, touched window keys
out); after the commit, the rules engine evaluates the windows the batch touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import psycopg
from prometheus_client import start_http_server

from rtmh.config import Settings
from rtmh.ingest.batch import Batch
from rtmh.ingest.checkpoint import Timings
from rtmh.ingest.safety_net import InTransaction
from rtmh.ingest.throughput import ThroughputPublisher
from rtmh.ingest.worker import Worker
from rtmh.kafka.client import MessageReader
from rtmh.records import DecodedRecord, WindowKey
from rtmh.rules.engine import RuleEngine
from rtmh.windows.cardinality import KeyGuard, Limits
from rtmh.windows.partials import build_partials
from rtmh.windows.store import merge_partials

log = logging.getLogger("rtmh")


def window_stage(settings: Settings, guard: KeyGuard | None = None) -> InTransaction:
    """Stage 2 inside the checkpoint: the stored records' window partials, merged in its
    transaction; returns the windows they touched. ``guard`` folds window keys over the budget
    into __other__ (raw_events, already written, keeps every service)."""
    size, slide = settings.window_size_s, settings.window_slide_s

    def in_transaction(
        conn: psycopg.Connection, records: Sequence[DecodedRecord]
    ) -> set[WindowKey]:
        if guard is not None:
            records = guard.fold(records, conn)
        partials = build_partials(records, size, slide)
        merge_partials(conn, partials)
        return set(partials)

    return in_transaction


def window_keys(
    settings: Settings, guard: KeyGuard | None = None
) -> Callable[[Sequence[DecodedRecord]], set[WindowKey]]:
    """The windows records touch, written or not (for a batch whose commit is found only on a
    retry, after its reply was lost; ``guard`` folds them as that commit did)."""
    size, slide = settings.window_size_s, settings.window_slide_s

    def touched(records: Sequence[DecodedRecord]) -> set[WindowKey]:
        if guard is not None:
            records = guard.fold(records)
        return set(build_partials(records, size, slide))

    return touched


def key_guard(settings: Settings) -> KeyGuard:
    """The worker's window-key budget (RTMH_WINDOW_MAX_*, docs/cardinality.md)."""
    limits = Limits(settings.window_max_new_keys_per_batch, settings.window_max_keys_per_minute)
    return KeyGuard(limits)


class MetricsPortBusy(Exception):
    """RTMH_METRICS_PORT cannot be bound."""


def serve_metrics(port: int) -> None:
    """Prometheus exposition of this process's metrics on ``port`` (0: none)."""
    if not port:
        return
    try:
        start_http_server(port)
    except OSError as err:
        raise MetricsPortBusy(f"RTMH_METRICS_PORT={port}: {err.strerror}") from None
    log.info("Prometheus metrics on http://0.0.0.0:%d/metrics", port)


def run_worker(settings: Settings, on_signals: Callable[[Callable[[], None]], None]) -> None:
    """`rtmh worker`: metrics, then the composed worker until ``on_signals`` stops it."""
    assert settings.postgres_url and settings.kafka_bootstrap_servers
    serve_metrics(settings.metrics_port)
    worker = build_worker(settings, settings.postgres_url, settings.kafka_bootstrap_servers)
    on_signals(worker.stop)
    worker.run()


def build_worker(
    settings: Settings,
    postgres_url: str,
    bootstrap: str,
    *,
    rules: bool = True,
    timings: Timings | None = None,
    reader: MessageReader | None = None,
    guard: KeyGuard | None = None,
) -> Worker:
    """Stages 1 and 2 in the checkpoint, stage 3 after it (``rules=False``: windows only;
    ``guard``: a window-key budget of the caller's, e.g. on a test's clock)."""
    guard = guard or key_guard(settings)
    worker = Worker(
        settings,
        postgres_url,
        bootstrap,
        in_transaction=window_stage(settings, guard),
        touched_by=window_keys(settings, guard),
        timings=timings,
        reader=reader,
    )
    # settles the batch's fold decisions: only a committed batch's keys join the minute
    worker.after_commit.append(guard.after_commit)
    # the API's live stream: ingest rates, NOTIFYed once a second from a thread of its own
    throughput = ThroughputPublisher(postgres_url)
    worker.after_commit.append(throughput.after_commit)
    worker.on_stop.append(throughput.stop)
    throughput.start()
    if rules:
        engine = RuleEngine(settings, postgres_url)

        def evaluate(_batch: Batch, touched: set[WindowKey]) -> None:
            engine.submit(touched)

        worker.after_commit.append(evaluate)
        worker.on_stop.append(engine.stop)
        engine.start()
    return worker
