"""`rtmh bench ingest`, the report: tables of the figures and the targets, and the JSON file."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.table import Table

from rtmh.bench.common import (
    figures_table,
)
from rtmh.bench.ingest.workers import VARIANTS


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

    otlp = result.get("otlp") or {}
    runs = otlp.get("runs") or {}
    if runs:
        json_worker = r["worker"]
        otlp_rows = [
            [
                "native JSON (the reference)",
                f"{json_worker['events']:,}",
                f"{json_worker['events']:,}",
                "1",
                f"{wl['avg_message_bytes']:.0f}",
                f"{json_worker['seconds']:.2f}",
                f"{json_worker['events_per_s']:,.0f}",
                "100%",
                f"{json_worker['cpu_us_per_event']:.1f}",
                f"{json_worker['batches']:,}",
                f"{json_worker['rss_peak_mb']:.0f} MB",
            ]
        ]
        for fmt, run in runs.items():
            ratio = otlp["vs_json_worker"][fmt]
            otlp_rows.append(
                [
                    fmt,
                    f"{run['messages']:,}",
                    f"{run['records']:,}",
                    f"{run['records_per_message']:.1f}",
                    f"{run['avg_message_bytes']:,.0f}",
                    f"{run['seconds']:.2f}",
                    f"{run['records_per_s']:,.0f}",
                    f"{ratio:.0%} {mark(otlp['targets_met'][fmt])}",
                    f"{run['cpu_us_per_event']:.1f}",
                    f"{run['batches']:,}",
                    f"{run['rss_peak_mb']:.0f} MB",
                ]
            )
        yield figures_table(
            "OTLP through the whole rtmh worker (issue 20): records stored per second",
            (
                "format",
                "messages",
                "records",
                "records/msg",
                "bytes/msg",
                "seconds",
                "records/s",
                "of JSON",
                "CPU µs/record",
                "batches",
                "RSS peak",
            ),
            otlp_rows,
            caption="the same steady traffic; a record is one raw_events row (a log record or "
            "a data point; the latency samples are cumulative histograms, one point per "
            f"series per 0.1 s). Target: >= {otlp['target_vs_json_min']:.0%} of the JSON rate. "
            "A batch closes at RTMH_BATCH_MAX_MESSAGES records (an OTLP message counts its "
            "records).",
        )

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
