"""Turning what a `rtmh bench notify` run saw into its figures (incident commit -> webhook
received, in milliseconds) and the JSON document."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from rtmh.bench.common import machine_info
from rtmh.bench.stats import distribution

TARGET_P99_MS: Final = 500.0


@dataclass
class Observed:
    """What one run saw, before it is turned into figures."""

    count: int
    interval_ms: float
    #: idempotency key -> time.time() just before COMMIT was sent, and once it returned
    commits_sent: dict[str, float]
    commits: dict[str, float]
    #: idempotency key -> time.time() when the receiver had the body
    arrivals: dict[str, float]
    complete: bool
    duplicates: int
    bad_signatures: int
    statuses: dict[str, int]
    notifier_exit_code: int | None


def summarise(latencies_ms: Sequence[float]) -> dict[str, float]:
    """count, min, p50, p90, p99, max, mean; only ``count`` (0) without values."""
    if not latencies_ms:
        return {"count": 0}
    return {"count": len(latencies_ms), **distribution(latencies_ms, (0.50, 0.90, 0.99))}


def results(o: Observed) -> dict[str, Any]:
    """Delivery counts and the latency distributions, over the notifications that arrived."""
    arrived = [k for k in sorted(o.commits) if k in o.arrivals]
    latencies = [(o.arrivals[k] - o.commits[k]) * 1000.0 for k in arrived]
    from_commit_sent = [(o.arrivals[k] - o.commits_sent[k]) * 1000.0 for k in arrived]
    return {
        "received": len(latencies),
        "missing": o.count - len(latencies),
        "complete": o.complete,
        "duplicates": o.duplicates,
        "bad_signatures": o.bad_signatures,
        "statuses": o.statuses,
        "notifier_exit_code": o.notifier_exit_code,
        "latency_ms": summarise(latencies),
        # the same, from just before COMMIT was sent (includes the commit's own fsync)
        "latency_from_commit_sent_ms": summarise(from_commit_sent),
    }


def figures(
    o: Observed, *, started_at: str, postgres: dict[str, object], warmup: int
) -> dict[str, Any]:
    """Every figure of the run, as printed and written to JSON (the README quotes them)."""
    result = results(o)
    met = {"p99": result["latency_ms"].get("p99", math.inf) < TARGET_P99_MS}
    return {
        "benchmark": "notify",
        "started_at": started_at,
        "machine": machine_info(),
        "postgres": postgres,
        "workload": {
            "notifications": o.count,
            "interval_ms": o.interval_ms,
            "warmup": warmup,
            "channel": "webhook, HMAC-SHA256 signed, loopback receiver (HTTP/1.1 keep-alive)",
            "notifier": "rtmh notifier (python -m rtmh.cli notifier), separate process, "
            "default options",
            "measured": "time.time() once COMMIT returned -> time.time() when the receiver has "
            "the body (latency_from_commit_sent_ms: from just before COMMIT was sent)",
        },
        "results": result,
        "targets": {"p99_max_ms": TARGET_P99_MS},
        "targets_met": met,
    }
