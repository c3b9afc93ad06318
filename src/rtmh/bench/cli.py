"""`rtmh bench ...` subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rtmh.config import ConfigError, Settings, load_settings

bench_app = typer.Typer(help="Benchmarks: measured throughput and latency, printed and as JSON.")

_out = Console()
_err = Console(stderr=True)


def _settings(ctx: typer.Context) -> Settings:
    obj = ctx.obj
    if isinstance(obj, Settings):
        return obj
    try:
        return load_settings()
    except ConfigError as err:
        _err.print(f"[bold red]error:[/] {err}", highlight=False)
        raise typer.Exit(2) from None


@bench_app.command("ingest")
def ingest(
    ctx: typer.Context,
    events: Annotated[
        int, typer.Option("--events", min=1000, help="messages to produce and ingest")
    ] = 200_000,
    json_file: Annotated[
        Path | None, typer.Option("--json", help="also write every figure to this JSON file")
    ] = None,
) -> None:
    """End-to-end worker events/s beside the COPY ceiling and a naive consumer (issue 3).

    Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set (it creates and drops its own databases
    and topics there), else embedded servers in a temporary directory."""
    from rtmh.bench import ingest as bench

    settings = _settings(ctx)
    result = bench.run(settings, events, _err)
    for table in bench.render(result):
        _out.print(table)
    if json_file is not None:
        bench.save(result, json_file)
        _out.print(f"figures written to {json_file}")
