"""`rtmh bench notify`'s figures as tables: the latency distribution and the target."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from rich.table import Table

from rtmh.bench.common import figures_table


def render(result: dict[str, Any]) -> Iterator[Table]:
    """The tables for the console."""
    r = result["results"]
    lat = r["latency_ms"]
    m, pg, w = result["machine"], result["postgres"], result["workload"]

    def ms(name: str) -> str:
        value = lat.get(name)
        return "-" if value is None or math.isnan(value) else f"{value:,.1f}"

    caption = (
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB; {m['python']}; "
        f"PostgreSQL {pg['version']} ({pg['mode']}); one commit every {w['interval_ms']:g} ms"
    )
    yield figures_table(
        f"rtmh bench notify: {w['notifications']:,} notifications, incident commit -> "
        "webhook received",
        ("received", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "duplicates", "rows sent"),
        [
            [
                f"{r['received']:,} / {w['notifications']:,}",
                ms("p50"),
                ms("p90"),
                ms("p99"),
                ms("max"),
                ms("mean"),
                str(r["duplicates"]),
                f"{r['statuses'].get('sent', 0):,}",
            ]
        ],
        caption=caption,
    )
    ok = result["targets_met"]["p99"]
    yield figures_table(
        "target (issue 5)",
        ("target", "measured", ""),
        [
            [
                f"p99 < {result['targets']['p99_max_ms']:.0f} ms on loopback",
                f"{ms('p99')} ms",
                "[green]met[/]" if ok else "[red]missed[/]",
            ]
        ],
    )
