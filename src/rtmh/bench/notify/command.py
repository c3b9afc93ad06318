"""The `rtmh bench notify` command: its options, then run -> render -> JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import psycopg
import typer
from rich.markup import escape

from rtmh.bench.common import cli_settings, consoles, report
from rtmh.bench.notify.render import render
from rtmh.bench.notify.run import run


def register(bench_app: typer.Typer) -> None:
    """Add ``notify`` to the ``rtmh bench`` group."""

    @bench_app.command("notify")
    def notify(
        ctx: typer.Context,
        count: Annotated[
            int, typer.Option("--count", min=1, help="notifications to measure")
        ] = 500,
        interval_ms: Annotated[
            float,
            typer.Option("--interval-ms", min=0, help="spacing of the incident commits"),
        ] = 20.0,
        json_file: Annotated[
            Path | None, typer.Option("--json", help="also write every figure to this JSON file")
        ] = None,
    ) -> None:
        """Incident commit -> webhook received, p50/p99, through the real notifier (issue 5).

        Uses POSTGRES_URL when set (it creates and drops its own database there), else an
        embedded PostgreSQL in a temporary directory."""
        out, err = consoles()
        settings = cli_settings(ctx, err)
        try:
            result = run(settings, count, interval_ms, err)
        except (RuntimeError, psycopg.Error, OSError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        report(out, render(result), result, json_file)
        missing = result["results"]["missing"]
        if missing:
            err.print(
                f"[bold red]error:[/] {missing} notifications were not received", highlight=False
            )
            raise typer.Exit(1)
