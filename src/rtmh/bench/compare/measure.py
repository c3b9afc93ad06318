"""Webhooks -> figures, for each system: burst start -> first webhook for that service, bursts
detected within the deadline, and false alerts (webhooks for a service with no burst then)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rtmh.bench.common import machine_info, now_iso
from rtmh.bench.compare.model import RTMH, Arrival, CompareConfig, Observed
from rtmh.bench.compare.peer import ratio_expr
from rtmh.bench.detect.model import Burst
from rtmh.bench.stats import distribution


@dataclass(frozen=True)
class Span:
    """A burst as the systems lived it: its service, first line's and last line's wall time."""

    index: int
    service: str
    started_at: float
    ended_at: float


def spans(bursts: Sequence[Burst], stopped_at: float) -> list[Span]:
    """The bursts that began; one still running when the traffic stopped ends there."""
    return [
        Span(b.index, b.service, b.started_at, b.ended_at or stopped_at)
        for b in bursts
        if b.started_at is not None
    ]


def detections(
    bursts: Sequence[Span], arrivals: Sequence[Arrival], system: str, deadline_s: float
) -> dict[int, float | None]:
    """Burst index -> seconds from its start to ``system``'s first webhook for its service
    within ``deadline_s``; None when missed."""
    out: dict[int, float | None] = {}
    mine = sorted((a for a in arrivals if a.system == system), key=lambda a: a.at)
    for b in bursts:
        out[b.index] = next(
            (
                a.at - b.started_at
                for a in mine
                if a.service == b.service and b.started_at <= a.at <= b.started_at + deadline_s
            ),
            None,
        )
    return out


def false_alerts(
    bursts: Sequence[Span], arrivals: Sequence[Arrival], system: str, grace_s: float
) -> list[Arrival]:
    """``system``'s webhooks for a service with no burst at the time (a burst's alert may still
    fire for ``grace_s`` after its end: the window still holds its errors). Webhooks for one
    service less than ``grace_s`` apart are one false alert (a group's repeats), the first one
    counted."""
    out: list[Arrival] = []
    last: dict[str, float] = {}
    for a in sorted((a for a in arrivals if a.system == system), key=lambda a: a.at):
        explained = any(
            b.service == a.service and b.started_at <= a.at <= b.ended_at + grace_s for b in bursts
        )
        if explained:
            continue
        previous = last.get(a.service)
        last[a.service] = a.at
        if previous is None or a.at - previous > grace_s:
            out.append(a)
    return out


def latency_summary(values: Sequence[float]) -> dict[str, float | int] | None:
    """n, min, p50, p99, max, mean in seconds; None without values."""
    if not values:
        return None
    return {"n": len(values), **distribution(values, (0.50, 0.99))}


def system_figures(
    system: str,
    bursts: Sequence[Span],
    arrivals: Sequence[Arrival],
    deadline_s: float,
    grace_s: float,
) -> dict[str, object]:
    """One row of the table: latency, detected, missed and false alerts of ``system``."""
    found = detections(bursts, arrivals, system, deadline_s)
    latencies = [v for v in found.values() if v is not None]
    false = false_alerts(bursts, arrivals, system, grace_s)
    return {
        "system": system,
        "latency_s": latency_summary(latencies),
        "detected": len(latencies),
        "bursts": len(bursts),
        "missed": [i for i, v in found.items() if v is None],
        "false_alerts": len(false),
        "false_alert_services": sorted({a.service for a in false}),
        "per_burst_s": {str(i): v for i, v in found.items()},
        "webhooks": sum(a.system == system for a in arrivals),
    }


def verdicts(rows: Sequence[dict[str, object]], reference: str) -> list[str]:
    """Plain sentences: where each peer did better than ``reference`` and where it did not."""
    ref = next((r for r in rows if r["system"] == reference), None)
    if ref is None:
        return []
    out: list[str] = []
    for row in rows:
        if row is ref:
            continue
        out.extend(_compare(ref, row))
    return out


def _p50(row: dict[str, object]) -> float | None:
    stats = row["latency_s"]
    return float(stats["p50"]) if isinstance(stats, dict) else None


def _compare(ref: dict[str, object], peer: dict[str, object]) -> list[str]:
    name, me = str(peer["system"]), str(ref["system"])
    out: list[str] = []
    a, b = _p50(ref), _p50(peer)
    if a is not None and b is not None:
        faster, slower, ratio = (name, me, a / b) if b < a else (me, name, b / a)
        out.append(f"{faster} detected faster than {slower} (p50 {min(a, b):.1f} s against "
                   f"{max(a, b):.1f} s, {ratio:.1f}x)")  # fmt: skip
    for key, better, what in (
        ("detected", operator.gt, "detected more bursts"),
        ("false_alerts", operator.lt, "raised fewer false alerts"),
    ):
        x, y = int(str(peer[key])), int(str(ref[key]))
        if better(x, y):
            out.append(f"{name} {what} than {me} ({x} against {y})")
        elif better(y, x):
            out.append(f"{me} {what} than {name} ({y} against {x})")
    return out


def command_line(c: CompareConfig) -> str:
    """The command that repeats this run."""
    command = f"rtmh bench compare --bursts {c.bursts} --rate {c.rate:g}"
    if c.profiles:
        command += f" --profiles {','.join(c.profiles)}"
    command += f" --base-errors {c.base_errors:g}"
    return command if c.full_windows else "rtmh bench compare --short"


def figures(
    o: Observed, *, started_at: str, peer: dict[str, str] | None, skipped: str | None
) -> dict[str, Any]:
    """Every figure of the run, as printed and written to JSON (the README quotes them)."""
    bursts = spans(o.bursts, o.stopped_at)
    # an RTMH incident can reopen while its window still holds the burst's errors
    rtmh_grace = o.timeline.deadline_s + o.window_size_s + o.window_slide_s
    rows = [system_figures(RTMH, bursts, o.arrivals, o.timeline.deadline_s, rtmh_grace)]
    rows += [
        system_figures(p.system, bursts, o.arrivals, p.deadline_s, p.grace_s) for p in o.profiles
    ]
    c = o.config
    return {
        "benchmark": "compare",
        "started_at": started_at,
        "finished_at": now_iso(),
        "command": command_line(c),
        "machine": machine_info(),
        "peer": peer,
        "skipped": skipped,
        "config": {
            "bursts": c.bursts,
            "rate_msgs_per_s": c.rate,
            "services": list(o.requests),
            "burst_error_ratio": c.burst_errors,
            "base_error_ratio": c.base_errors,
            "full_windows": c.full_windows,
            "rtmh_rule": o.rule,
            "rtmh_windows_s": [o.window_size_s, o.window_slide_s],
            "profiles": {
                p.name: {**p.describe(), "expr": ratio_expr(p.rate_window_s)} for p in o.profiles
            },
            "timeline": asdict(o.timeline),
        },
        "systems": rows,
        "verdicts": verdicts(rows, RTMH),
        "bursts": [_burst_json(b, rows) for b in bursts],
        "quiet": {
            "service": c.services()[-1],
            "log_lines": o.requests.get(c.services()[-1]),
            "error_sent_at": o.quiet_error_sent,
        },
        "traffic": {"seconds": o.ran_s, "produced": o.produced, "log_lines": o.requests},
        "false_alerts": [asdict(a) for a in _all_false(bursts, o, rtmh_grace)],
    }


def _burst_json(b: Span, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return {
        **asdict(b),
        "detection_s": {r["system"]: r["per_burst_s"][str(b.index)] for r in rows},
    }


def _all_false(bursts: Sequence[Span], o: Observed, rtmh_grace: float) -> list[Arrival]:
    graces = {RTMH: rtmh_grace, **{p.system: p.grace_s for p in o.profiles}}
    return [a for system, g in graces.items() for a in false_alerts(bursts, o.arrivals, system, g)]
