"""The `rtmh bench soak` command: its options, then run -> table, JSON and memory plot."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from rtmh.bench.common import cli_settings, consoles, report
from rtmh.bench.soak.memory import plot
from rtmh.bench.soak.model import SoakConfig
from rtmh.bench.soak.render import render

#: --short: the test's run (about two minutes with the settle): every fault kind, compressed
SHORT = SoakConfig(
    duration_s=100.0,
    fault_every_s=12.0,
    quiet_start_s=8.0,
    down_s=(2.0, 5.0),
    receiver_failure_s=(4.0, 8.0),
    burst_every_s=25.0,
    burst_s=8.0,
    bad_every=97,
    sample_s=10.0,
)


def register(bench_app: typer.Typer) -> None:
    """Adds `soak` to the `rtmh bench` sub-app."""

    @bench_app.command("soak")
    def soak(
        ctx: typer.Context,
        duration: Annotated[
            float, typer.Option("--duration", min=60, help="seconds of traffic and faults")
        ] = 3600.0,
        rate: Annotated[float, typer.Option("--rate", min=20, help="messages/s")] = 200.0,
        fault_every: Annotated[
            float, typer.Option("--fault-every", min=5, help="mean seconds between faults")
        ] = SoakConfig.fault_every_s,
        seed: Annotated[
            int, typer.Option("--seed", help="the fault and traffic schedule")
        ] = SoakConfig.seed,
        short: Annotated[
            bool,
            typer.Option(
                "--short",
                help="100 s with a fault every ~12 s (every kind) and 10-s samples: the test's",
            ),
        ] = False,
        json_file: Annotated[
            Path | None,
            typer.Option(
                "--json", help="also write every figure to this JSON file, the plot beside it"
            ),
        ] = None,
    ) -> None:
        """Steady traffic with bursts while workers, the notifier and PostgreSQL are killed or
        restarted and the webhook receiver fails; then: every message once, every malformed
        one dead-lettered, windows exact, every burst alerted, notifications once per key,
        memory per minute (docs/soak.md).

        Uses POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS when set (no PostgreSQL restarts then),
        else embedded servers. Exits 1 when a check fails."""
        from rtmh.bench.soak.run import run

        out, err = consoles()
        settings = cli_settings(ctx, err)
        if short:
            config = replace(SHORT, rate=rate, seed=seed)
        else:
            config = SoakConfig(
                duration_s=duration, rate=rate, fault_every_s=fault_every, seed=seed
            )
        try:
            result = run(settings, config, short, err)
        except KeyboardInterrupt:
            err.print("interrupted: everything the bench started is stopped")
            raise typer.Exit(130) from None
        if json_file is not None:
            png = json_file.with_suffix(".png")
            title = f"rtmh bench soak: memory over {result.ran_s / 60:.0f} min with faults"
            if plot(result.memory, result.faults, png, title):
                result.plot = str(png)
            else:
                err.print("[yellow]no plot: pip install 'rtmh[bench]' (matplotlib)[/]")
        report(out, render(result), result.as_json(), json_file)
        if result.error is not None:
            err.print(f"[bold red]error:[/] {result.error}", highlight=False)
        if result.logs is not None:
            err.print(f"the processes' logs are kept in {result.logs}", highlight=False)
        if not result.passed():
            raise typer.Exit(1)
