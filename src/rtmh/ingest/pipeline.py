"""Wires the stages into one worker: the ingest checkpoint carries the window partials in its
transaction; after the commit, the rules engine evaluates the windows the batch touched."""

from __future__ import annotations

import psycopg

from rtmh.config import Settings
from rtmh.ingest.batch import Batch
from rtmh.ingest.worker import Worker
from rtmh.windows.partials import build_partials
from rtmh.windows.store import merge_partials


def window_stage(settings: Settings):  # type: ignore[no-untyped-def]
    size, slide = settings.window_size_s, settings.window_slide_s

    def in_transaction(conn: psycopg.Connection, batch: Batch) -> None:
        partials = build_partials((rec for _, rec in batch.records), size, slide)
        merge_partials(conn, partials)
        batch.touched_windows = set(partials)

    return in_transaction


def build_worker(settings: Settings, postgres_url: str, bootstrap: str) -> Worker:
    return Worker(settings, postgres_url, bootstrap, in_transaction=window_stage(settings))
