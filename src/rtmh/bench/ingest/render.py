"""`rtmh bench ingest`, the report: tables of the figures and the targets, and the JSON file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.table import Table

from rtmh.bench.common import (
    figures_table,
)
from rtmh.bench.ingest.run import VARIANTS


def render(result: dict[str, Any]) -> Iterator[Table]:
    """The figures table and the targets table."""
    r, ratios, met = result["results"], result["ratios"], result["targets_met"]
    ceiling = r["copy_ceiling"]["rows_per_s"]
    c = r["copy_ceiling"]
    rows = [
        [
            "COPY ceiling (no Kafka)",
            f"{c['rows']:,}",
            f"{c['seconds']:.2f}",
            f"{ceiling:,.0f}",
            "100%",
            "-",
            "-",
        ]
    ]
    for key, label in VARIANTS.items():
        w = r[key]
        rows.append(
            [
                label,
                f"{w['events']:,}",
                f"{w['seconds']:.2f}",
                f"{w['events_per_s']:,.0f}",
                f"{w['events_per_s'] / ceiling:.0%}",
                f"{w['rss_peak_mb']:.0f} MB",
                f"{w['cpu_us_per_event']:.1f}",
            ]
        )
    naive = r["naive"]
    rows.append(
        [
            "naive (INSERT + commit each)",
            f"{naive['messages']:,}",
            f"{naive['seconds']:.2f}",
            f"{naive['events_per_s']:,.0f}",
            f"{naive['events_per_s'] / ceiling:.1%}",
            "-",
            "-",
        ]
    )
    m, pg, wl = result["machine"], result["postgres"], result["workload"]
    caption = (
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB RAM; {m['python']}; "
        f"PostgreSQL {pg['version']}, {pg['mode']}. {wl['avg_message_bytes']:.0f}-byte messages, "
        f"batches of {wl['batch_max_messages']:,}. Worker: first message to last commit. "
        f"Ceiling: {c['method']}. Naive: {naive['note']}."
    )
    yield figures_table(
        f"rtmh bench ingest: {wl['events']:,} events",
        ("run", "events", "seconds", "events/s", "of ceiling", "RSS peak", "CPU µs/event"),
        rows,
        caption=caption,
    )

    net = r.get("safety_net")
    if net is not None:
        yield figures_table(
            f"safety net: one message PostgreSQL refuses in a {net['batch_messages']:,} batch",
            ("checkpoint", "ms (median)", "extra attempts"),
            [
                ["clean", f"{net['clean_ms']:.1f}", "-"],
                ["one refused", f"{net['one_refused_ms']:.1f}", f"{net['extra_attempts']:.0f}"],
                ["cost of the refused message", f"{net['extra_ms']:+.1f}", ""],
            ],
            caption=f"{net['note']}, {net['repeats']} runs each",
        )

    def mark(ok: bool) -> str:
        return "[green]met[/]" if ok else "[red]missed[/]"

    t = result["targets"]
    rss = max(r[k]["rss_peak_mb"] for k in VARIANTS)
    yield figures_table(
        "targets (issue 3; windows: issue 4)",
        ("target", "measured", ""),
        [
            [
                f"ingest worker >= {t['worker_vs_ceiling_min']:.0%} of the COPY ceiling",
                f"{ratios['ingest_worker_vs_ceiling']:.0%}",
                mark(met["ingest_worker_vs_ceiling"]),
            ],
            [
                f"rtmh worker >= {t['worker_vs_ceiling_min']:.0%} of the COPY ceiling",
                f"{ratios['worker_vs_ceiling']:.0%}",
                mark(met["worker_vs_ceiling"]),
            ],
            [
                f"rtmh worker >= {t['worker_vs_naive_min']:.0f}x the naive consumer",
                f"{ratios['worker_vs_naive']:.1f}x",
                mark(met["worker_vs_naive"]),
            ],
            [
                f"worker RSS < {t['worker_rss_max_mb']:.0f} MB",
                f"{rss:.0f} MB",
                mark(met["worker_rss"]),
            ],
            [
                f"windows add <= {t['windows_overhead_max']:.0%} to the ingest worker's time",
                f"{ratios['windows_overhead']:+.1%}",
                mark(met["windows_overhead"]),
            ],
        ],
    )
