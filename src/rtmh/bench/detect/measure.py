"""Turning what a `rtmh bench detect` run saw into its figures: which incident answered which
burst, the latency of each stage, and the diagnostics read back from PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from itertools import pairwise
from typing import Any

import psycopg

from rtmh.bench.common import (
    SQL,
    BenchServers,
    machine_info,
    now_iso,
    postgres_info,
)
from rtmh.bench.detect.model import (
    BASE_ERROR_RATIO,
    GAP_RANGE_S,
    POLL_S,
    RULE,
    STAGES,
    TARGET_P99_S,
    Burst,
    DetectConfig,
    IncidentEvent,
    Observed,
)
from rtmh.bench.stats import distribution


def summary(values: Sequence[float]) -> dict[str, float | int] | None:
    """n, min, p50, p95, p99, max, mean in seconds; None without values."""
    if not values:
        return None
    return {"n": len(values), **distribution(values, (0.50, 0.95, 0.99))}


def match(bursts: list[Burst], events: list[IncidentEvent]) -> list[IncidentEvent]:
    """Each burst's detection is the first opened/reopened row of its service committed after
    the burst began; rows matching no burst are returned (unexpected opens)."""
    for ev in events:
        ev.burst = None
    for b in bursts:
        b.detected = False
        if b.started_at is not None:
            _match_one(b, events)
    return [e for e in events if e.burst is None and e.event_type != "resolved"]


def _match_one(b: Burst, events: list[IncidentEvent]) -> None:
    live = False
    assert b.started_at is not None
    for ev in events:
        if ev.service != b.service:
            continue
        if ev.created_at < b.started_at:
            live = ev.event_type != "resolved"
            continue
        if ev.event_type == "resolved" or ev.burst is not None:
            continue
        ev.burst = b.index
        b.detected = True
        b.event_type = ev.event_type
        b.incident_id = ev.incident_id
        b.committed_at = ev.seen_at
        b.seen_via = ev.via
        b.incident_txn_at = ev.created_at
        b.evaluated_at = ev.evaluated_at
        b.fired_window = ev.window
        break
    b.live_at_start = live


def ingest_times(url: str, bursts: list[Burst]) -> None:
    """raw_events.created_at (the ingest transaction's start) of each burst's key lines."""
    with psycopg.connect(url, autocommit=True) as conn:
        for b in bursts:
            for request, ts, attr in (
                (b.trigger_request, b.trigger_ts, "trigger_ingest_txn_at"),
                (b.first_error_request, b.first_error_ts, "first_error_ingest_txn_at"),
            ):
                if request is None or ts is None:
                    continue
                row = conn.execute(
                    SQL.ingested_at, (b.service, ts - 0.01, ts + 0.01, request)
                ).fetchone()
                setattr(b, attr, float(row[0]) if row else None)


def diagnostics(url: str, started_wall: float, window: dict[str, float]) -> dict[str, Any]:
    """What explains the figures: the worker's ingest transactions over the measured span (from
    raw_events.created_at, each transaction's start) and autovacuum activity."""
    t0, t1 = started_wall + window.get("t0", 0.0), started_wall + window.get("t1", 0.0)
    with psycopg.connect(url, autocommit=True) as conn:
        batches = conn.execute(SQL.ingest_transactions, (t0, t1)).fetchall()
        tables = conn.execute(SQL.table_stats).fetchall()
    starts = [float(b[0]) for b in batches]
    return {
        "ingest_transactions": {
            "n": len(batches),
            "messages": summary([float(b[1]) for b in batches]),
            "interval_s": summary([b - a for a, b in pairwise(starts)]),
            "oldest_message_age_at_start_s": summary([float(b[0] - b[2]) for b in batches]),
            "newest_message_age_at_start_s": summary([float(b[0] - b[3]) for b in batches]),
            "note": "age = transaction start - the message's ts (its produce time, 10 ms ticks)",
        },
        "tables": [
            {
                "table": name,
                "inserts": inserts,
                "updates": updates,
                "live_rows": live,
                "dead_rows": dead,
                "autovacuums": vacuums,
                "autoanalyzes": analyzes,
                "last_autovacuum_s_into_traffic": None if lv is None else lv - started_wall,
                "last_autoanalyze_s_into_traffic": None if la is None else la - started_wall,
            }
            for name, inserts, updates, live, dead, vacuums, analyzes, lv, la in tables
        ],
    }


def _diffs(bursts: Sequence[Burst], late: str, early: str) -> list[float]:
    out: list[float] = []
    for b in bursts:
        a, z = getattr(b, early), getattr(b, late)
        if b.detected and a is not None and z is not None:
            out.append(z - a)
    return out


def _burst_json(b: Burst) -> dict[str, Any]:
    out = asdict(b)
    for key, _, late, early in STAGES:
        a, z = getattr(b, early), getattr(b, late)
        out[key] = None if a is None or z is None else z - a
    return out


def command_line(c: DetectConfig) -> str:
    """The command that repeats this run (flags at their default left out)."""
    command = f"rtmh bench detect --bursts {c.bursts} --rate {c.rate:g}"
    for flag, value, default in (
        ("--services", c.services, 20),
        ("--burst-errors", c.burst_errors, 0.5),
        ("--burst-factor", c.burst_factor, 1.0),
        ("--base-errors", c.base_errors, BASE_ERROR_RATIO),
    ):
        if value != default:
            command += f" {flag} {value:g}"
    return command


def figures(o: Observed, srv: BenchServers, url: str) -> dict[str, Any]:
    """Every figure of the run, as printed and written to JSON (the README quotes them)."""
    unexpected = match(o.bursts, o.events)
    ingest_times(url, o.bursts)
    latencies = {key: summary(_diffs(o.bursts, late, early)) for key, _, late, early in STAGES}
    missed = [b.index for b in o.bursts if not b.detected and not b.live_at_start]
    first, hub = latencies["first_error_to_commit"], latencies["trigger_to_commit"]
    diagnosed = diagnostics(url, o.traffic_started_wall, o.window)
    return {
        "benchmark": "detect",
        "started_at": o.started_at,
        "finished_at": now_iso(),
        "command": command_line(o.config),
        "machine": {
            **machine_info(),
            "load_average_before": [round(x, 2) for x in o.load_before],
            "load_average_after": [round(x, 2) for x in o.load_after],
        },
        "servers": srv.describe(),
        "postgres": {
            **postgres_info(url),
            "mode": "embedded, the defaults of `rtmh up` (durable: fsync and synchronous_commit on)"
            if srv.embedded_postgres
            else "external (POSTGRES_URL)",
        },
        "config": _config(o),
        "background": _background(o),
        "latency_s": latencies,
        "detected": sum(b.detected for b in o.bursts),
        "missed": missed,
        "masked_by_live_incident": [
            b.index for b in o.bursts if not b.detected and b.live_at_start
        ],
        "unexpected_opens": [asdict(e) for e in unexpected],
        "traffic_started_at": o.traffic_started_wall,
        "bursts": [_burst_json(b) for b in o.bursts],
        "diagnostics": diagnosed,
        "targets": {"first_error_to_commit_p99_max_s": TARGET_P99_S},
        "targets_met": {
            "first_error_to_commit_p99": _met(first, missed),
            "trigger_to_commit_p99": _met(hub, missed),
        },
    }


def _met(stats: dict[str, float | int] | None, missed: list[int]) -> bool:
    return stats is not None and stats["p99"] < TARGET_P99_S and not missed


def _config(o: Observed) -> dict[str, Any]:
    s, c = o.settings, o.config
    return {
        "bursts": c.bursts,
        "rate_msgs_per_s": c.rate,
        "services": c.services,
        "per_service_log_lines_per_s": c.rate / 2 / c.services,
        "base_error_ratio": c.base_errors,
        "burst_error_ratio": c.burst_errors,
        "burst_rate_factor": c.burst_factor,
        "burst_seconds": c.burst_seconds,
        "gap_between_bursts_s": list(GAP_RANGE_S),
        "warmup_s": c.warmup_s,
        "window_size_s": s.window_size_s,
        "window_slide_s": s.window_slide_s,
        "batch_max_ms": s.batch_max_ms,
        "batch_max_messages": s.batch_max_messages,
        "partitions": s.partitions,
        "worker": "subprocess `python -m rtmh.cli worker`",
        "rule": {"name": RULE, **asdict(o.rule)},
        "commit_clock": "NOTIFY of the incident's outbox row (delivered at commit) "
        f"received by a LISTENing connection; {POLL_S * 1000:.0f} ms poll as fallback",
    }


def _background(o: Observed) -> dict[str, Any]:
    w = o.window
    span = w.get("t1", o.ran_s) - w.get("t0", 0.0)
    produced = w.get("produced1", 0) - w.get("produced0", 0)
    committed = w.get("committed1", 0) - w.get("committed0", 0)
    return {
        "seconds": o.ran_s,
        "produced": o.produced,
        "measured_span_s": span,
        "produced_per_s": produced / span if span > 0 else None,
        "committed_per_s": committed / span if span > 0 else None,
        "max_lag_messages": o.max_lag,
        "drain_after_stop_s": o.drain_s,
        "worker_join_s": o.join_s,
        "cpu_percent_of_one_core": o.cpu_percent,
        "broker_log_rolls": len(o.rolls),
        "broker_roll_max_hold_ms": round(max((r.held_s for r in o.rolls), default=0.0) * 1000),
    }
