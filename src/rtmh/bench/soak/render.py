"""`rtmh bench soak`'s figures: the end checks, each met or missed; the faults; the memory of
each process over the run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from rtmh.bench.common import figures_table
from rtmh.bench.soak.model import (
    FLAT_MB_PER_10_MIN,
    ROLES,
    TARGET_BROKER_CPU,
    TARGET_BROKER_RSS_MB,
    SoakResult,
    broker_bounded,
    faults_by_kind,
)


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "[bold red]MISSED[/]")


def _s(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s"


def render(result: SoakResult) -> Iterator[RenderableType]:
    c, k = result.config, result.checks
    status = ", ".join(f"{n} {s}" for s, n in sorted(k.notification_status.items())) or "none"
    rows = [
        (
            "no process died on its own",
            "; ".join(k.crashes) if k.crashes else "none",
            _met(not k.crashes),
        ),
        (
            "every good message once in raw_events",
            f"{k.good_sent:,} sent, {k.good_rows:,} rows: {k.good_missing:,} missing, "
            f"{k.good_duplicates:,} doubled ({k.good_failed:,} refused by the broker)",
            _met(k.exactly_once),
        ),
        (
            "every malformed message in dead_letters",
            f"{k.bad_sent:,} sent, {k.bad_dead_lettered:,} dead letters, {k.bad_missing:,} missing",
            _met(k.dead_letters_ok),
        ),
        (
            "metrics_agg = recomputation from raw_events",
            f"{k.windows_compared:,} windows, {max(0, len(k.window_problems) - 1):,} differences",
            _met(k.windows_ok),
        ),
        (
            "every burst alerted",
            f"{k.bursts_alerted} of {k.bursts} bursts opened an incident; first line -> "
            f"incident p50 {_s(k.alert_delay_p50_s)}, max {_s(k.alert_delay_max_s)}; "
            f"{len(k.openings_without_burst)} opening(s) with no burst "
            f"{k.openings_without_burst[:3] if k.openings_without_burst else ''}",
            _met(k.alerts_ok),
        ),
        (
            "notifications delivered once per idempotency key",
            f"{k.incidents} incidents, {k.notifications} notifications ({status}); receiver "
            f"accepted {k.keys_accepted} keys, {k.keys_missing} missing, {k.keys_unknown} "
            f"unknown; {k.notification_attempts} attempts, {k.refused_by_receiver} refused "
            f"(503), {k.redeliveries} redeliveries of an accepted key",
            _met(k.notifications_ok),
        ),
    ]
    done = faults_by_kind(result.faults)
    caption = (
        f"{result.ran_s / 60:.1f} min at {c.rate:,.0f} msg/s over {c.services} services, "
        f"{result.bursts} bursts of {c.burst_errors:.0%} errors; faults: "
        + ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in done.items())
        + f"; settled {result.settle_s:.0f} s after the traffic stopped.\n"
        f"{result.machine.get('cpu_model', '?')}, {result.machine.get('cpu_logical_cores', '?')} "
        f"cores"
    )
    title = "rtmh bench soak" + (" --short" if result.short else "") + ": end checks"
    if result.error is not None:
        title += " (the run ended early: checks not done are MISSED)"
    yield figures_table(
        title, ("check", "found", ""), rows, caption=caption, justify=lambda _i: "left"
    )
    yield _memory_table(result)
    for line in result.skipped:
        yield Text(f"skipped: {line}", style="yellow")
    problems = k.window_problems[:6]
    for line in problems:
        yield Text(line, style="red")
    if result.plot:
        yield Text(f"memory plot: {result.plot}")


def _memory_table(result: SoakResult) -> RenderableType:
    f: dict[str, Any] = result.figures()
    rows = []
    for role in ROLES:
        r = f.get(role)
        if r is None:
            continue
        rows.append(
            (
                role,
                f"{r['first_mb']:,.0f}",
                f"{r['max_mb']:,.0f}",
                f"{r['last_mb']:,.0f}",
                "-" if r["slope_second_half_mb_per_10_min"] is None
                else f"{r['slope_second_half_mb_per_10_min']:+.1f}",
            )
        )  # fmt: skip
    cpu = f.get("broker_cpu_mean")
    caption = (
        f"sampled every {result.config.sample_s:g} s; PostgreSQL is the PSS of all its processes. "
        f"Broker: CPU mean {cpu} % of a core (max {f.get('broker_cpu_max')}), "
        f"{result.rolls} log rolls (writes held at most {result.max_hold_ms} ms, "
        f"{result.stale_fetches} fetches for a rolled topic answered by the gate); bound: RSS < "
        f"{TARGET_BROKER_RSS_MB:.0f} MB and flat (< {FLAT_MB_PER_10_MIN:.0f} MB/10 min), CPU < "
        f"{TARGET_BROKER_CPU:.0f} %: {_met(broker_bounded(f))}"
    )
    return figures_table(
        "memory (MB)",
        ("process", "first", "max", "last", "slope, 2nd half (MB/10 min)"),
        rows,
        caption=caption,
    )
