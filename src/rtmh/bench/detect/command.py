"""The `rtmh bench detect` command: its options, then run -> render -> JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rtmh.bench.common import cli_settings, consoles, report
from rtmh.bench.detect.model import BASE_ERROR_RATIO, DetectConfig
from rtmh.bench.detect.render import render
from rtmh.bench.detect.run import run


def register(bench_app: typer.Typer) -> None:
    """Adds `detect` to the `rtmh bench` sub-app."""

    @bench_app.command("detect")
    def detect(
        ctx: typer.Context,
        bursts: Annotated[
            int, typer.Option("--bursts", min=1, max=1000, help="error bursts to detect")
        ] = 20,
        rate: Annotated[
            float,
            typer.Option("--rate", min=100, help="background messages/s (logs + metrics)"),
        ] = 10_000,
        services: Annotated[
            int,
            typer.Option(
                "--services", min=1, max=1000, help="services sharing the background traffic"
            ),
        ] = 20,
        burst_errors: Annotated[
            float,
            typer.Option(
                "--burst-errors", min=0.06, max=1.0, help="share of error lines during a burst"
            ),
        ] = 0.5,
        burst_factor: Annotated[
            float,
            typer.Option(
                "--burst-factor",
                min=1.0,
                max=100.0,
                help="a bursting service logs at this multiple of its normal rate",
            ),
        ] = 1.0,
        base_errors: Annotated[
            float,
            typer.Option(
                "--base-errors", min=0.0, max=0.05, help="share of error lines in the background"
            ),
        ] = BASE_ERROR_RATIO,
        json_file: Annotated[
            Path | None, typer.Option("--json", help="also write every figure to this JSON file")
        ] = None,
    ) -> None:
        """Detection latency (issue 4): first error of a burst -> incident committed, and the
        line that made the rule's condition true -> incident committed, with steady background
        traffic.

        Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set (it creates and drops its own
        database and topics there), else embedded servers in a temporary directory."""
        out, err = consoles()
        settings = cli_settings(ctx, err)
        config = DetectConfig(
            bursts=bursts,
            rate=rate,
            services=services,
            burst_errors=burst_errors,
            burst_factor=burst_factor,
            base_errors=base_errors,
        )
        try:
            result = run(settings, config, err)
        except KeyboardInterrupt:
            err.print("interrupted: worker stopped, databases and embedded servers removed")
            raise typer.Exit(130) from None
        except RuntimeError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
        report(out, render(result), result, json_file)
