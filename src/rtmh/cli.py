"""The `rtmh` command: parses flags, loads settings, and hands over to the stage that does the work.

Every setting is a flag on the top-level command (``rtmh --help`` lists them) and an environment
variable; flags win. A bad setting ends the program with one line naming it.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from rtmh.config import ConfigError, Settings, load_settings
from rtmh.console import make_console
from rtmh.db.connect import DatabaseUnavailable, connect, describe_url
from rtmh.db.locate import database
from rtmh.db.queries import load

app = typer.Typer(
    help="RTMH, the Real-Time DevOps Monitoring Hub: Kafka in, PostgreSQL as truth, "
    "sub-second alerts out.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = make_console(stderr=True)
out = make_console()


def _enable_crash_traces() -> None:
    """Have a crash in native code (SIGSEGV, SIGABRT, ...) print the Python stack of every thread
    to stderr first: the log under `rtmh up` (its children are `rtmh worker` / `rtmh notifier`
    processes, so they pass here too), systemd and Kubernetes. faulthandler keeps the file and
    writes to its descriptor, so it must stay open: sys.stderr does.

    It cannot see a crash inside one of librdkafka's own threads: those block every signal, and
    the kernel kills a thread that faults with SIGSEGV blocked without running any handler (the
    crash of issue 24 left no trace for that reason; the supervisor logs the exit status)."""
    # stderr may be no real file (captured by a test runner): then there is nothing to write to
    with contextlib.suppress(AttributeError, OSError, ValueError, RuntimeError):
        faulthandler.enable(file=sys.stderr, all_threads=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def main(
    ctx: typer.Context,
    postgres_url: Annotated[
        str | None, typer.Option(help="PostgreSQL URL [env POSTGRES_URL]; unset = embedded")
    ] = None,
    kafka_bootstrap_servers: Annotated[
        str | None,
        typer.Option(help="Kafka host:port list [env KAFKA_BOOTSTRAP_SERVERS]; unset = embedded"),
    ] = None,
    topic_prefix: Annotated[
        str | None, typer.Option(help="topic prefix [env RTMH_TOPIC_PREFIX, default rtmh.]")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="embedded data [env RTMH_DATA_DIR, default user data dir]")
    ] = None,
    group_id: Annotated[
        str | None, typer.Option(help="consumer group [env RTMH_GROUP_ID, default rtmh-worker]")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="partitions of created topics [env RTMH_PARTITIONS, 4]")
    ] = None,
    batch_max_messages: Annotated[
        int | None,
        typer.Option(help="a batch holds N records at most [env RTMH_BATCH_MAX_MESSAGES]"),
    ] = None,
    batch_max_ms: Annotated[
        int | None, typer.Option(help="a batch waits N ms at most [env RTMH_BATCH_MAX_MS, 200]")
    ] = None,
    max_message_bytes: Annotated[
        int | None,
        typer.Option(help="larger messages are dead-lettered [env RTMH_MAX_MESSAGE_BYTES]"),
    ] = None,
    retention_days: Annotated[
        int | None, typer.Option(help="raw_events retention [env RTMH_RETENTION_DAYS, 7]")
    ] = None,
    window_size_s: Annotated[
        int | None, typer.Option(help="sliding window size [env RTMH_WINDOW_SIZE_S, 60]")
    ] = None,
    window_slide_s: Annotated[
        int | None, typer.Option(help="sliding window step [env RTMH_WINDOW_SLIDE_S, 10]")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Prometheus /metrics port, 0 = off [env RTMH_METRICS_PORT]")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="DEBUG/INFO/WARNING/ERROR [env RTMH_LOG_LEVEL]")
    ] = None,
) -> None:
    _enable_crash_traces()
    overrides: dict[str, Any] = {
        "postgres_url": postgres_url,
        "kafka_bootstrap_servers": kafka_bootstrap_servers,
        "topic_prefix": topic_prefix,
        "data_dir": data_dir,
        "group_id": group_id,
        "partitions": partitions,
        "batch_max_messages": batch_max_messages,
        "batch_max_ms": batch_max_ms,
        "max_message_bytes": max_message_bytes,
        "retention_days": retention_days,
        "window_size_s": window_size_s,
        "window_slide_s": window_slide_s,
        "metrics_port": metrics_port,
        "log_level": log_level,
    }
    try:
        settings = load_settings(**overrides)
    except ConfigError as err:
        raise _fail(str(err), 2) from None
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ctx.obj = settings


def _print_status(url: str) -> None:
    from rtmh.db import migrate

    with connect(url) as conn:
        rows = migrate.status(conn, migrate.load_files())
    table = Table(title=f"migrations on {describe_url(url)}")
    for column in ("migration", "state", "applied at"):
        table.add_column(column)
    colours = {"applied": "green", "pending": "yellow", "changed": "red", "missing-file": "red"}
    for row in rows:
        when = row.applied_at.strftime("%Y-%m-%d %H:%M:%S %Z") if row.applied_at else "-"
        table.add_row(row.version, f"[{colours[row.state]}]{row.state}[/]", when)
    out.print(table)


@app.command()
def migrate(
    ctx: typer.Context,
    test: Annotated[bool, typer.Option("--test", help="only test the connection")] = False,
    status: Annotated[bool, typer.Option("--status", help="list applied and pending")] = False,
    distribute: Annotated[
        bool,
        typer.Option(
            "--distribute", help="then distribute the tables with Citus (docs/scaling.md)"
        ),
    ] = False,
    print_calls: Annotated[
        bool,
        typer.Option("--print", help="with --distribute: print the Citus calls, run nothing"),
    ] = False,
) -> None:
    """Apply pending migrations (or --test the connection, or show --status); with
    --distribute, then run the Citus calls of docs/scaling.md (--print: only show them)."""
    from rich.markup import escape

    from rtmh.db import citus
    from rtmh.db import migrate as migrator

    settings: Settings = ctx.obj
    if print_calls:
        if not distribute:
            raise _fail("--print goes with --distribute: rtmh migrate --distribute --print", 2)
        for step in citus.plan():
            out.print(escape(citus.render(step)), highlight=False, soft_wrap=True)
        return
    try:
        with database(settings, console) as url:
            if test:
                with connect(url) as conn:
                    row = conn.execute(load("cli").connection_identity).fetchone()
                assert row is not None
                out.print(
                    f"connection ok: {describe_url(url)} as {row[0]} ({row[1].split(',')[0]})"
                )
                return
            if status:
                _print_status(url)
                return
            with connect(url, autocommit=True) as conn:
                files = migrator.load_files()

                def report(version: str, applied: bool) -> None:
                    verb = "[green]applied[/]" if applied else "[dim]up to date[/]"
                    out.print(f"{verb} {version}")

                done = migrator.apply_pending(conn, files, progress=report)
                out.print(f"{len(done)} migration(s) applied" if done else "nothing to apply")
                if distribute:

                    def ran(call: str, now: bool) -> None:
                        verb = "[green]ran[/]" if now else "[dim]already done[/]"
                        out.print(f"{verb} {escape(call)}", highlight=False, soft_wrap=True)

                    count = citus.distribute(conn, progress=ran)
                    out.print(f"{count} Citus call(s) run" if count else "already distributed")
    except DatabaseUnavailable as err:
        raise _fail(str(err)) from None
    except migrator.MigrationError as err:
        raise _fail(str(err)) from None
    except citus.CitusUnavailable as err:
        raise _fail(str(err)) from None


def _require(settings: Settings, *names: str) -> None:
    env = {"postgres_url": "POSTGRES_URL", "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS"}
    for name in names:
        if not getattr(settings, name):
            raise _fail(
                f"{env[name]} is not set: this command runs against your own servers "
                f"(set {env[name]} or --{name.replace('_', '-')}); `rtmh up` runs everything "
                "on embedded defaults"
            )


def _stop_on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: object) -> None:
        logging.getLogger("rtmh").info(
            "%s received: finishing the current batch", signal.Signals(signum).name
        )
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def worker(ctx: typer.Context) -> None:
    """Consume the topics into PostgreSQL, maintain windows and evaluate rules (one process of
    a consumer group; run more for more throughput)."""
    from rtmh.worker import MetricsPortBusy, run_worker

    settings: Settings = ctx.obj
    _require(settings, "postgres_url", "kafka_bootstrap_servers")
    try:
        run_worker(settings, _stop_on_signals)
    except (DatabaseUnavailable, MetricsPortBusy) as err:
        raise _fail(str(err)) from None


@app.command()
def notifier(ctx: typer.Context) -> None:
    """Deliver the notification outbox (run several for more throughput: rows are claimed with
    FOR UPDATE SKIP LOCKED)."""
    from rtmh.notify.cli import run_notifier

    settings: Settings = ctx.obj
    _require(settings, "postgres_url")
    try:
        run_notifier(settings)
    except DatabaseUnavailable as err:
        raise _fail(str(err)) from None


@app.command()
def api(
    ctx: typer.Context,
    host: Annotated[
        str | None, typer.Option(help="address to listen on [env RTMH_API_HOST, 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port, 0 = any free one [env RTMH_API_PORT, 8080]")
    ] = None,
) -> None:
    """Serve the REST API (docs at /docs, OpenAPI at /openapi.json) on POSTGRES_URL."""
    from rtmh.api.serve import PortBusy, serve

    settings: Settings = ctx.obj
    _require(settings, "postgres_url")
    assert settings.postgres_url is not None
    try:
        serve(
            settings,
            settings.postgres_url,
            host if host is not None else settings.api_host,
            port if port is not None else settings.api_port,
        )
    except PortBusy as err:
        raise _fail(str(err)) from None


@app.command()
def simulate(
    ctx: typer.Context,
    rate: Annotated[
        float,
        typer.Option(min=1, help="log lines + samples per second (JSON: one a message)"),
    ] = 1000,
    duration: Annotated[float, typer.Option(min=0.1, help="seconds to run")] = 60,
    scenario: Annotated[
        str, typer.Option(help="steady | error-burst | latency-spike | deploy")
    ] = "steady",
    seed: Annotated[int | None, typer.Option(help="random seed for repeatable traffic")] = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="json (RTMH's own shape) | otlp-proto | otlp-json (the OpenTelemetry "
            "Collector's Kafka exporter: many records a message; events stay JSON)",
        ),
    ] = "json",
) -> None:
    """Produce realistic logs, metrics and events to the topics at a target rate."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from rtmh import otlp_traffic
    from rtmh import simulate as sim
    from rtmh.kafka.client import ensure_topics, make_producer, produce_waiting

    settings: Settings = ctx.obj
    _require(settings, "kafka_bootstrap_servers")
    bootstrap = settings.kafka_bootstrap_servers
    assert bootstrap
    try:
        plan = sim.scenario(scenario, duration)
    except ValueError as err:
        raise _fail(str(err), 2) from None
    if fmt not in otlp_traffic.FORMATS:
        raise _fail(f"unknown format {fmt!r}: use {', '.join(otlp_traffic.FORMATS)}", 2)
    # OTLP: exported every 0.2 s, the Collector batch processor's default timeout
    traffic = otlp_traffic.make_traffic(fmt, plan, seed=seed, export_interval_s=0.2)
    ensure_topics(
        bootstrap, [settings.topic(k) for k in ("logs", "metrics", "events")], settings.partitions
    )
    producer = make_producer(bootstrap)
    acks: Counter[str] = Counter()
    last_error: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is None:
            acks["ok"] += 1
        else:
            acks["failed"] += 1
            last_error[:] = [str(err)]

    topics = {k: settings.topic(k) for k in ("logs", "metrics", "events")}

    def produce(kind: str, key: bytes, value: bytes) -> None:
        produce_waiting(producer, topics[kind], value, key, on_delivery)

    stop = {"now": False}
    _stop_on_signals(lambda: stop.update(now=True))
    out.print(f"scenario {plan.name}: {plan.description}; format {fmt}")
    with Progress(
        TextColumn("[bold]simulate[/]"),
        BarColumn(),
        TextColumn("{task.fields[sent]:>10,} messages"),
        TextColumn("{task.fields[records]:>10,} records"),
        TextColumn("{task.fields[rate]:>8,.0f} records/s"),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("run", total=duration, sent=0, records=0, rate=0.0)

        def tick(t: float, result: sim.RunResult) -> None:
            total = sum(result.produced.values())
            records = sum(otlp_traffic.records_of(traffic, result.produced).values())
            progress.update(
                task, completed=t, sent=total, records=records, rate=records / t if t else 0.0
            )

        result = sim.run(
            produce,
            lambda: producer.poll(0),
            traffic,
            rate,
            duration,
            on_tick=tick,
            stop=lambda: stop["now"],
        )
        for kind, key, value in otlp_traffic.flush(traffic):  # what OTLP still buffers
            produce(kind, key, value)
            result.produced[kind] += 1
        progress.update(task, completed=duration)
    remaining = producer.flush(30)
    total = sum(result.produced.values())
    records = otlp_traffic.records_of(traffic, result.produced)
    table = Table(
        title=f"{total:,} messages, {sum(records.values()):,} records in {result.seconds:.1f} s "
        f"({sum(records.values()) / result.seconds:,.0f} records/s)"
    )
    for column in ("topic", "messages", "records"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for kind, topic in topics.items():
        table.add_row(topic, f"{result.produced[kind]:,}", f"{records[kind]:,}")
    out.print(table)
    out.print(
        f"acknowledged by the broker: {acks['ok']:,}; failed: {acks['failed']:,}; "
        f"still queued: {remaining:,}"
    )
    if acks["failed"] or remaining:
        why = last_error[0] if last_error else "timed out in the local queue"
        raise _fail(f"not every message was delivered ({why}); is the broker reachable?")


@app.command()
def up(
    ctx: typer.Context,
    demo: Annotated[bool, typer.Option("--demo", help="also run the demo story")] = False,
    duration: Annotated[
        float | None, typer.Option(min=1, help="stop after this many seconds")
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="start with an empty database")] = False,
    host: Annotated[
        str | None, typer.Option(help="the API's address [env RTMH_API_HOST, 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="the API's port, 0 = any [env RTMH_API_PORT, 8080]")
    ] = None,
) -> None:
    """Everything on one machine: embedded PostgreSQL and broker (unless POSTGRES_URL /
    KAFKA_BOOTSTRAP_SERVERS are set), migrations, worker, notifier, the API, and a live view."""
    from rtmh.up.hub import UpError, UpOptions, run_up

    settings: Settings = ctx.obj
    try:
        run_up(
            settings,
            UpOptions(demo=demo, duration=duration, fresh=fresh, host=host, port=port),
            out,
        )
    except UpError as err:
        raise _fail(str(err)) from None
    except DatabaseUnavailable as err:
        raise _fail(str(err)) from None


def _register_subcommands() -> None:
    from rtmh.bench.cli import bench_app
    from rtmh.bench.compare import register as register_bench_compare
    from rtmh.bench.detect import register as register_bench_detect
    from rtmh.bench.notify import register as register_bench_notify
    from rtmh.bench.soak import register as register_bench_soak
    from rtmh.notify.cli import notify_app
    from rtmh.service.cli import dashboard_command, token_app
    from rtmh.service.config_cli import config_app
    from rtmh.service.oncall_cli import incident_app, incidents_command, rules_app, silence_app

    register_bench_detect(bench_app)
    register_bench_notify(bench_app)
    register_bench_compare(bench_app)
    register_bench_soak(bench_app)
    app.add_typer(bench_app, name="bench")
    app.add_typer(notify_app, name="notify")
    app.add_typer(token_app, name="token")
    app.command("dashboard")(dashboard_command)
    app.add_typer(config_app, name="config")
    app.command("incidents")(incidents_command)
    app.add_typer(incident_app, name="incident")
    app.add_typer(silence_app, name="silence")
    app.add_typer(rules_app, name="rules")


_register_subcommands()

if __name__ == "__main__":  # pragma: no cover
    app()
