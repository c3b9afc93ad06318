"""The `rtmh bench compare` command: its options, then run -> figures -> table and JSON."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from rtmh.bench.common import cli_settings, consoles, now_iso, report
from rtmh.bench.compare.measure import figures
from rtmh.bench.compare.model import PROFILES, CompareConfig
from rtmh.bench.compare.peer import INSTALL_HINT, find_binaries, version
from rtmh.bench.compare.render import render
from rtmh.bench.compare.run import run
from rtmh.bench.detect.model import BASE_ERROR_RATIO

#: --short: the test's run, well under two minutes (bursts, profiles)
SHORT = (2, ("tight",))


def parse_profiles(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in PROFILES]
    if unknown or not names:
        raise typer.BadParameter(
            f"use {', '.join(PROFILES)} (comma-separated)", param_hint="--profiles"
        )
    return names


def register(bench_app: typer.Typer) -> None:
    """Adds `compare` to the `rtmh bench` sub-app."""

    @bench_app.command("compare")
    def compare(
        ctx: typer.Context,
        bursts: Annotated[
            int, typer.Option("--bursts", min=1, max=18, help="error bursts, one per service")
        ] = 5,
        rate: Annotated[
            float, typer.Option("--rate", min=20, help="messages/s (a log line and a sample each)")
        ] = 200.0,
        profiles: Annotated[
            str,
            typer.Option(
                "--profiles", help="Prometheus + Alertmanager settings: tight, default or both"
            ),
        ] = "tight,default",
        base_errors: Annotated[
            float,
            typer.Option("--base-errors", min=0.0, max=0.05, help="errors outside the bursts"),
        ] = BASE_ERROR_RATIO,
        short: Annotated[
            bool,
            typer.Option(
                "--short",
                help="2 bursts, tight profile only, rate window not yet full (about a minute): "
                "checks that it all works; its figures flatter Prometheus",
            ),
        ] = False,
        json_file: Annotated[
            Path | None, typer.Option("--json", help="also write every figure to this JSON file")
        ] = None,
    ) -> None:
        """The same bursts through RTMH and through Prometheus + Alertmanager (issue 16): burst
        start -> webhook received, bursts detected, false alerts.

        Starts Prometheus and Alertmanager itself (Debian's `prometheus` and
        `prometheus-alertmanager`); without them RTMH alone is measured. Uses POSTGRES_URL /
        KAFKA_BOOTSTRAP_SERVERS when set, else embedded servers."""
        out, err = consoles()
        settings = cli_settings(ctx, err)
        chosen = parse_profiles(profiles)
        if short:
            bursts, chosen = SHORT
        config = CompareConfig(
            bursts=bursts,
            rate=rate,
            profiles=chosen,
            base_errors=base_errors,
            full_windows=not short,
        )
        started_at = now_iso()
        binaries = find_binaries()
        skipped = None
        peer = None
        if binaries is None:
            skipped = (
                "Prometheus + Alertmanager not installed, measuring RTMH alone; to compare: "
                + INSTALL_HINT
            )
            err.print(f"[yellow]{skipped}[/]", highlight=False)
            # RTMH alone: its own pace, not the absent peer's minutes of warm-up
            config = replace(config, profiles=())
        else:
            peer = {"prometheus": version(binaries.prometheus),
                    "alertmanager": version(binaries.alertmanager)}  # fmt: skip
        try:
            observed = run(settings, config, binaries, err)
        except KeyboardInterrupt:
            err.print("interrupted: everything the bench started is stopped")
            raise typer.Exit(130) from None
        except RuntimeError as error:
            err.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(1) from None
        result = figures(observed, started_at=started_at, peer=peer, skipped=skipped)
        report(out, render(result), result, json_file)
