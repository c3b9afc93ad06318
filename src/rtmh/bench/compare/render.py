"""`rtmh bench compare`'s figures: one table, then in words where a peer did better."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from rtmh.bench.common import figures_table


def _s(stats: dict[str, Any] | None, key: str) -> str:
    return "-" if stats is None else f"{stats[key]:,.1f}"


def render(result: dict[str, Any]) -> Iterator[RenderableType]:
    c, m = result["config"], result["machine"]
    rows = [
        [
            r["system"],
            _s(r["latency_s"], "p50"),
            _s(r["latency_s"], "p99"),
            _s(r["latency_s"], "max"),
            f"{r['detected']}/{r['bursts']}",
            str(r["false_alerts"]) + (f" ({', '.join(r['false_alert_services'])})"
                                      if r["false_alert_services"] else ""),
        ]
        for r in result["systems"]
    ]  # fmt: skip
    rule = c["rtmh_rule"]
    caption = (
        f"{c['bursts']} bursts of {c['burst_error_ratio']:.0%} errors, "
        f"{c['timeline']['burst_s']:g} s each, {c['rate_msgs_per_s']:,.0f} msg/s over "
        f"{len(c['services'])} services (one quiet, one error); RTMH: error_rate > "
        f"{rule['threshold']:g}, min_count {rule['min_count']}"
        + "".join(f"; Prometheus {name}: {p['expr']}" for name, p in c["profiles"].items())
        + f".\n{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB"
    )
    yield figures_table(
        "rtmh bench compare: burst start -> webhook received (s)",
        ("system/profile", "p50", "p99", "max", "detected", "false alerts"),
        rows,
        caption=caption,
    )
    if not c["full_windows"]:
        yield Text(
            "--short: the first burst came before the rate window was full; a burst is then a "
            "larger share of it, so these figures flatter Prometheus (a check, not a result)",
            style="yellow",
        )
    if result["skipped"]:
        yield Text(f"skipped: {result['skipped']}", style="yellow")
    for sentence in result["verdicts"]:
        yield Text(f"- {sentence}")
