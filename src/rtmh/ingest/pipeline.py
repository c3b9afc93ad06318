"""Wires the stages into one worker: the ingest checkpoint carries the window partials in its
transaction; after the commit, the rules engine evaluates the windows the batch touched."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg

from rtmh.config import Settings
from rtmh.ingest.store import InTransaction
from rtmh.ingest.worker import Worker
from rtmh.records import DecodedRecord, WindowKey
from rtmh.rules.engine import RuleEngine
from rtmh.windows.partials import build_partials
from rtmh.windows.store import merge_partials


def window_stage(settings: Settings) -> InTransaction:
    """The checkpoint's second writer: the stored records' window partials, merged in its
    transaction; returns the windows they touched."""
    size, slide = settings.window_size_s, settings.window_slide_s

    def in_transaction(
        conn: psycopg.Connection, records: Sequence[DecodedRecord]
    ) -> set[WindowKey]:
        partials = build_partials(records, size, slide)
        merge_partials(conn, partials)
        return set(partials)

    return in_transaction


def window_keys(settings: Settings) -> Callable[[Sequence[DecodedRecord]], set[WindowKey]]:
    """The windows records touch, written or not (for a batch whose commit is found only on a
    retry, after its reply was lost)."""
    size, slide = settings.window_size_s, settings.window_slide_s
    return lambda records: set(build_partials(records, size, slide))


def build_worker(
    settings: Settings, postgres_url: str, bootstrap: str, *, rules: bool = True
) -> Worker:
    worker = Worker(
        settings,
        postgres_url,
        bootstrap,
        in_transaction=window_stage(settings),
        touched_by=window_keys(settings),
    )
    if rules:
        engine = RuleEngine(settings, postgres_url)
        worker.after_commit.append(engine.submit)
        worker.on_stop.append(engine.stop)
        engine.start()
    return worker
