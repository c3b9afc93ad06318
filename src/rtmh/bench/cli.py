"""`rtmh bench ...` subcommands."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from rtmh.bench.common import cli_settings, consoles, report

bench_app = typer.Typer(help="Benchmarks: measured throughput and latency, printed and as JSON.")


@bench_app.callback(invoke_without_command=True)
def suite(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option("--events", min=1000, help="messages for the ingest benchmark")
    ] = 200_000,
    json_file: Annotated[
        Path | None,
        typer.Option("--json", help="write all figures to this file, one key per benchmark"),
    ] = None,
) -> None:
    """Without a subcommand: the whole suite, ingest, detect and notify, one after the other."""
    if ctx.invoked_subcommand is not None:
        return
    group: Any = ctx.command  # typer's own group class (typer vendors click)
    out, err = consoles()
    figures: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="rtmh-bench-suite-") as tmp:
        for name, args in (("ingest", ["--events", str(events)]), ("detect", []), ("notify", [])):
            command = group.get_command(ctx, name)
            part = Path(tmp) / f"{name}.json"
            err.rule(f"rtmh bench {name}")
            command.main(
                [*args, "--json", str(part)],
                prog_name=f"rtmh bench {name}",
                standalone_mode=False,
                obj=ctx.obj,
            )
            figures[name] = json.loads(part.read_text())
    if json_file is not None:
        json_file.write_text(json.dumps(figures, indent=2, default=str) + "\n")
        out.print(f"all figures written to {json_file}")


@bench_app.command("ingest")
def ingest(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option("--events", min=1000, help="messages to produce and ingest")
    ] = 200_000,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="all | json | otlp-proto | otlp-json: the OTLP encodings the whole worker is "
            "also run on (--events records each); the native JSON runs always run",
        ),
    ] = "all",
) -> None:
    """End-to-end worker events/s beside the COPY ceiling and a naive consumer (issue 3), and
    OTLP records/s beside the native JSON rate (issue 20).

    Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set (it creates and drops its own databases
    and topics there), else embedded servers in a temporary directory."""
    from rtmh.bench import ingest as bench
    from rtmh.otlp_traffic import Format

    out, err = consoles()
    encodings: dict[str, tuple[Format, ...]] = {
        "all": ("otlp-proto", "otlp-json"),
        "json": (),
        "otlp-proto": ("otlp-proto",),
        "otlp-json": ("otlp-json",),
    }
    if fmt not in encodings:
        raise typer.BadParameter(f"use one of {', '.join(encodings)}", param_hint="--format")
    settings = cli_settings(ctx, err)
    result = bench.run(settings, events, err, otlp=encodings[fmt])
    report(out, bench.render(result), result, json_file)


@bench_app.command("cardinality")
def cardinality(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option("--events", min=1000, help="messages of normal traffic")
    ] = 200_000,
    services: Annotated[
        int, typer.Option("--services", min=1, help="distinct services flooding in one minute")
    ] = 100_000,
    unbounded: Annotated[
        bool, typer.Option("--unbounded", help="also run the flood with the bound lifted (slow)")
    ] = False,
    rounds: Annotated[
        int, typer.Option("--rounds", min=1, help="normal and flood runs alternate N times")
    ] = 2,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
) -> None:
    """A flood of distinct services (a request id in `service`) against normal traffic: the
    worker's rate and RSS with the window-key bound (issue 15, docs/cardinality.md).

    Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set, else embedded servers."""
    from rtmh.bench import cardinality as bench

    out, err = consoles()
    settings = cli_settings(ctx, err)
    result = bench.run(settings, events, services, err, unbounded=unbounded, rounds=rounds)
    report(out, bench.render(result), result, json_file)


@bench_app.command("up-soak")
def up_soak(
    ctx: typer.Context,
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.5, help="how long `rtmh up --demo` runs")
    ] = 60.0,
    sample_s: Annotated[
        float, typer.Option("--sample-seconds", min=1.0, help="seconds between samples")
    ] = 30.0,
    max_batches: Annotated[
        int | None,
        typer.Option(
            "--max-batches",
            min=10,
            help="the embedded broker's log bound (default RTMH_EMBEDDED_BROKER_MAX_BATCHES)",
        ),
    ] = None,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
) -> None:
    """`rtmh up --demo` left running (issue 21): the embedded broker's CPU and memory, the
    worker's lag and exactly-once delivery, with each figure against its target.

    Uses POSTGRES_URL when set (a fresh database there, dropped after), else an embedded
    PostgreSQL; the hub always runs its embedded broker."""
    from rtmh.bench import up_soak as bench

    out, err = consoles()
    settings = cli_settings(ctx, err)
    try:
        result = bench.run(settings, minutes, sample_s, max_batches, err)
    except bench.SoakError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(1) from None
    report(out, bench.render(result), result.as_json(), json_file)
    if not result.exactly_once:
        raise typer.Exit(1)


@bench_app.command("assign")
def assign(
    ctx: typer.Context,
    partitions: Annotated[
        int, typer.Option("--partitions", min=1, max=1024, help="partitions with stored offsets")
    ] = 100,
    case: Annotated[str, typer.Option("--case", help="all | intact | reset")] = "all",
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
) -> None:
    """Worker start -> first commit with many partitions holding stored offsets, their logs
    intact or reset (issue 15).

    Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set, else embedded servers."""
    from rtmh.bench import assign as bench

    out, err = consoles()
    if case not in ("all", *bench.CASES):
        raise typer.BadParameter(f"use all, {', '.join(bench.CASES)}", param_hint="--case")
    cases = list(bench.CASES) if case == "all" else [case]
    result = bench.run(cli_settings(ctx, err), partitions, cases, err)
    report(out, bench.render(result), result, json_file)


@bench_app.command("api")
def api(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option("--events", min=1000, help="raw_events rows over the last 6 h")
    ] = 10_000_000,
    windows: Annotated[
        int, typer.Option("--windows", min=1000, help="metrics_agg rows over the last 6 h")
    ] = 1_000_000,
    incidents: Annotated[
        int, typer.Option("--incidents", min=10, help="incidents over the last week")
    ] = 3000,
    clients: Annotated[
        int, typer.Option("--clients", min=1, max=500, help="concurrent clients")
    ] = 20,
    seconds: Annotated[
        float, typer.Option("--seconds", min=0.5, help="measured seconds per request type")
    ] = 20.0,
    warmup: Annotated[
        float, typer.Option("--warmup", min=0.0, help="unrecorded seconds before each type")
    ] = 3.0,
    explain: Annotated[
        bool,
        typer.Option("--explain", help="also print the plans of each type's slowest query"),
    ] = False,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
) -> None:
    """p50/p95/p99 of the incident list, one incident, a 6-h metric series and an events
    search, with concurrent clients on a real `rtmh api` over a generated data set.

    Uses POSTGRES_URL's server when set (a fresh database there, dropped after), else an
    embedded PostgreSQL; no broker."""
    from rtmh.bench import api as bench

    out, err = consoles()
    settings = cli_settings(ctx, err)
    result = bench.run(settings, events, windows, incidents, clients, seconds, warmup, err)
    report(out, bench.render(result), result, json_file)
    if explain:
        for plan in bench.plans(result):
            out.print(plan, highlight=False, markup=False)
