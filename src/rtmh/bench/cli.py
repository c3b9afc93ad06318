"""`rtmh bench ...` subcommands."""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks: measured throughput and latency, printed and as JSON.")
