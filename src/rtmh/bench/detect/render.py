"""`rtmh bench detect`'s figures as tables: latency by stage, the run's facts, the target."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from rtmh.bench.common import figures_table
from rtmh.bench.detect.model import STAGES, TARGET_P99_S


def _ms(value: float | int | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def _mark(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def render(result: dict[str, Any]) -> list[Table]:
    return [latency_table(result), run_table(result), target_table(result)]


def latency_table(result: dict[str, Any]) -> Table:
    c, lat = result["config"], result["latency_s"]
    rows: list[list[str]] = []
    for key, label, _, _ in STAGES:
        stats = lat[key]
        if stats is None:
            rows.append([label, "0", "-", "-", "-", "-", "-"])
            continue
        figures = (stats[k] for k in ("min", "p50", "p95", "p99", "max"))
        rows.append([label, str(stats["n"]), *map(_ms, figures)])
    m, pg = result["machine"], result["postgres"]
    caption = (
        f"{c['bursts']} bursts of {c['burst_error_ratio']:.0%} errors at "
        f"{c['burst_rate_factor']:g}x the service's rate ({c['per_service_log_lines_per_s']:,.0f} "
        f"log lines/s), {c['burst_seconds']:g} s each, over {c['services']} services; "
        f"rule error_rate > {c['rule']['threshold']:g} with min_count {c['rule']['min_count']}; "
        f"windows {c['window_size_s']} s / {c['window_slide_s']} s; batches <= "
        f"{c['batch_max_ms']} ms.\n"
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB; "
        f"load {m['load_average_before'][0]:.2f} -> {m['load_average_after'][0]:.2f}; "
        f"PostgreSQL {pg['version']} ({pg['mode']})"
    )
    return figures_table(
        f"rtmh bench detect: {result['detected']}/{c['bursts']} bursts detected "
        f"at {c['rate_msgs_per_s']:,.0f} msg/s background",
        ("latency (ms)", "n", "min", "p50", "p95", "p99", "max"),
        rows,
        caption=caption,
    )


def run_table(result: dict[str, Any]) -> Table:
    bg = result["background"]
    unexpected = result["unexpected_opens"]
    services = sorted({e["service"] for e in unexpected})
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in bg["cpu_percent_of_one_core"].items())
    return figures_table(
        "run",
        ("", "value"),
        [
            ["background produced", _rate(bg["produced_per_s"])],
            ["background committed by the worker", _rate(bg["committed_per_s"])],
            ["max lag (messages)", f"{bg['max_lag_messages']:,}"],
            ["drain after the traffic stopped", f"{bg['drain_after_stop_s']:.2f} s"],
            ["CPU (% of one core)", cpu],
            [
                "embedded broker log rolls",
                f"{bg.get('broker_log_rolls', 0)}, writes held at most "
                f"{bg.get('broker_roll_max_hold_ms', 0)} ms",
            ],
            ["missed bursts", ", ".join(map(str, result["missed"])) or "none"],
            [
                "bursts masked by a live incident",
                ", ".join(map(str, result["masked_by_live_incident"])) or "none",
            ],
            [
                "unexpected opens (no burst)",
                f"{len(unexpected)}" + (f" ({', '.join(services)})" if services else ""),
            ],
        ],
    )


def target_table(result: dict[str, Any]) -> Table:
    lat, met = result["latency_s"], result["targets_met"]
    first, hub = lat["first_error_to_commit"], lat["trigger_to_commit"]
    limit = f"{TARGET_P99_S * 1000:.0f} ms"
    return figures_table(
        "target (issue 4)",
        ("target", "measured", ""),
        [
            [
                f"first burst error -> incident p99 < {limit}",
                _ms(first["p99"] if first else None),
                _mark(met["first_error_to_commit_p99"]),
            ],
            [
                f"condition true -> incident p99 < {limit} (hub only)",
                _ms(hub["p99"] if hub else None),
                _mark(met["trigger_to_commit_p99"]),
            ],
        ],
    )
