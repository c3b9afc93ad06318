"""Wires the stages into one worker: ingest checkpoint + window partials in the transaction,
rules evaluation after the commit."""

from __future__ import annotations

from rtmh.config import Settings
from rtmh.ingest.worker import Worker


def build_worker(settings: Settings, postgres_url: str, bootstrap: str) -> Worker:
    return Worker(settings, postgres_url, bootstrap)
