"""Wires the stages into one worker: the ingest checkpoint carries the window partials in its
transaction; after the commit, the rules engine evaluates the windows the batch touched."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from rtmh.config import Settings
from rtmh.ingest.batch import Batch
from rtmh.ingest.worker import Worker
from rtmh.rules.engine import RuleEngine
from rtmh.windows.partials import build_partials
from rtmh.windows.store import merge_partials


def window_stage(settings: Settings) -> Callable[[psycopg.Connection, Batch], None]:
    """The checkpoint's second writer: this batch's window partials, merged in its transaction."""
    size, slide = settings.window_size_s, settings.window_slide_s

    def in_transaction(conn: psycopg.Connection, batch: Batch) -> None:
        partials = build_partials((rec for _, rec in batch.records), size, slide)
        merge_partials(conn, partials)
        batch.touched_windows = set(partials)

    return in_transaction


def build_worker(
    settings: Settings, postgres_url: str, bootstrap: str, *, rules: bool = True
) -> Worker:
    worker = Worker(settings, postgres_url, bootstrap, in_transaction=window_stage(settings))
    if rules:
        engine = RuleEngine(settings, postgres_url)
        worker.after_commit.append(engine.submit)
        worker.on_stop.append(engine.stop)
        engine.start()
    return worker
