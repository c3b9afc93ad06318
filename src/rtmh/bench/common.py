"""What every benchmark needs: servers, fresh migrated databases, machine facts, a table, JSON.

Servers: the ones POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS name, else an embedded PostgreSQL and an
embedded broker in a temporary directory that is removed afterwards. The embedded PostgreSQL runs
with the same settings as `rtmh up` (fsync and synchronous commit on), so the figures are the ones
a user of the default gets; ``postgres_info`` records the settings that matter beside them.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import psycopg
import typer
from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import rtmh
from rtmh.config import ConfigError, Settings, load_settings
from rtmh.console import make_console
from rtmh.db.connect import describe_url, normalise_url
from rtmh.db.databases import create_database, create_template, database_name, drop_database
from rtmh.db.queries import load

if TYPE_CHECKING:
    from rtmh.embedded.gate import Gate
    from rtmh.embedded.postgres import EmbeddedPostgres

SQL = load("bench")

#: PostgreSQL settings recorded with every result: they decide what a commit costs
PG_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "work_mem",
)


@dataclass
class BenchServers:
    """Where a benchmark runs. ``admin_url`` may CREATE DATABASE; each run gets fresh ones."""

    admin_url: str
    bootstrap: str
    embedded_postgres: bool
    embedded_broker: bool
    workdir: Path
    #: pids of the embedded servers ("postgres", "broker"), for CPU accounting
    pids: dict[str, int] = field(default_factory=dict)
    #: the gate in front of the embedded broker, when asked for (``gated``): a run can then
    #: bound the broker's log the way `rtmh up` does (rtmh.embedded.log_roll)
    gate: Gate | None = None
    #: the embedded PostgreSQL, when the run started one (a soak restarts it)
    postgres: EmbeddedPostgres | None = None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by each embedded server, its children included."""
        return {name: process_cpu_seconds(pid) for name, pid in self.pids.items()}

    def describe(self) -> dict[str, object]:
        return {
            "postgres": "embedded" if self.embedded_postgres else describe_url(self.admin_url),
            "broker": (
                "embedded (tansu, memory storage)" if self.embedded_broker else self.bootstrap
            ),
        }


@contextmanager
def bench_servers(
    postgres_url: str | None,
    bootstrap: str | None,
    *,
    console: Console | None = None,
    fast_unsafe: bool = False,
    broker: bool = True,
    gated: bool = False,
) -> Iterator[BenchServers]:
    """The given servers, or embedded ones (durable settings unless ``fast_unsafe``); without
    ``broker``, PostgreSQL only (``bootstrap`` is then ""); ``gated``: an embedded broker
    behind the gate, as `rtmh up` runs it."""
    from rtmh.embedded.broker import EmbeddedBroker
    from rtmh.embedded.postgres import EmbeddedPostgres
    from rtmh.kafka.client import wait_for_broker

    workdir = Path(tempfile.mkdtemp(prefix="rtmh-bench-"))
    pg: EmbeddedPostgres | None = None
    kafka: EmbeddedBroker | None = None
    status = console.status if console is not None else None
    try:
        if postgres_url:
            admin_url = normalise_url(postgres_url)
        else:
            pg = EmbeddedPostgres(workdir / "postgres", fast_unsafe=fast_unsafe, ephemeral=True)
            if status is not None:
                with status("starting embedded PostgreSQL"):
                    pg.start()
            else:
                pg.start()
            admin_url = pg.admin_url()
        servers_bootstrap = ""
        if broker and bootstrap:
            wait_for_broker(bootstrap, timeout=15)
            servers_bootstrap = bootstrap
        elif broker:
            kafka = EmbeddedBroker(workdir / "broker", gated=gated)
            servers_bootstrap = kafka.start()
            wait_for_broker(servers_bootstrap, timeout=30)
        pids = {}
        if pg is not None and pg.proc is not None:
            pids["postgres"] = pg.proc.pid
        if kafka is not None and kafka.proc is not None:
            pids["broker"] = kafka.proc.pid
        yield BenchServers(
            admin_url,
            servers_bootstrap,
            pg is not None,
            kafka is not None,
            workdir,
            pids,
            kafka.gate if kafka is not None else None,
            pg,
        )
    finally:
        if kafka is not None:
            kafka.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Databases:
    """Fresh, migrated databases cloned from one template (``CREATE DATABASE ... TEMPLATE``,
    see rtmh.db.databases), all dropped by ``drop_all``."""

    admin_url: str
    prefix: str = field(default_factory=lambda: f"rtmh_bench_{uuid.uuid4().hex[:8]}")
    created: list[str] = field(default_factory=list)
    _template: str | None = None

    def fresh(self, label: str) -> str:
        """URL of a new database with every migration applied."""
        if self._template is None:
            template = f"{self.prefix}_template"
            self.created.append(template)
            create_template(self.admin_url, template)
            self._template = template
        name = f"{self.prefix}_{label}"
        self.created.append(name)
        return create_database(self.admin_url, name, template=self._template)

    def drop(self, url: str) -> None:
        """Drop one database as soon as its phase is measured, so autovacuum working through
        its fresh rows never runs during a later phase."""
        name = database_name(url)
        if name in self.created:
            drop_database(self.admin_url, name)
            self.created.remove(name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            drop_database(self.admin_url, name)
        self.created.clear()


@contextmanager
def bench_databases(
    settings: Settings, console: Console | None = None, *, gated: bool = False
) -> Iterator[tuple[BenchServers, Databases]]:
    """The servers the settings name (POSTGRES_URL / KAFKA_BOOTSTRAP_SERVERS, embedded ones
    otherwise; ``gated`` as in ``bench_servers``) and the run's fresh databases, every one of
    them dropped at the end however the run ends."""
    with bench_servers(
        settings.postgres_url, settings.kafka_bootstrap_servers, console=console, gated=gated
    ) as servers:
        dbs = Databases(servers.admin_url)
        try:
            yield servers, dbs
        finally:
            dbs.drop_all()


def machine_info() -> dict[str, object]:
    """CPU, cores, RAM, OS and the versions of what the hot path runs on."""
    import confluent_kafka
    import msgspec

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    freq = psutil.cpu_freq()
    return {
        "cpu_model": model,
        "cpu_logical_cores": os.cpu_count(),
        "cpu_physical_cores": psutil.cpu_count(logical=False),
        "cpu_mhz": round(freq.max or freq.current) if freq else None,
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "rtmh": rtmh.__version__,
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "confluent_kafka": str(getattr(confluent_kafka, "__version__", "?")),
        "librdkafka": confluent_kafka.libversion()[0],
        "msgspec": msgspec.__version__,
    }


def postgres_info(url: str) -> dict[str, object]:
    """Server version and the settings in PG_SETTINGS."""
    with psycopg.connect(url) as conn:
        version = conn.execute(SQL.server_version).fetchone()
        rows = conn.execute(SQL.server_settings, (list(PG_SETTINGS),)).fetchall()
    settings = {}
    for name, setting, unit in rows:
        if unit == "8kB":
            settings[name] = f"{int(setting) * 8 // 1024} MB"
        elif unit and unit not in ("", None):
            settings[name] = f"{setting} {unit}"
        else:
            settings[name] = setting
    return {"version": version[0] if version else None, "settings": settings}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def progress_bar(console: Console) -> Progress:
    """The bar every long benchmark phase shows (on the console given, normally stderr)."""
    return Progress(
        TextColumn("[bold]{task.description:<24}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def figures_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str | None = None,
    justify: Callable[[int], str] = lambda i: "left" if i == 0 else "right",
) -> Table:
    table = Table(title=title, caption=caption, caption_justify="left")
    for i, name in enumerate(columns):
        table.add_column(name, justify=justify(i))  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    return table


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, its live children and the children it has reaped
    (PostgreSQL's backends come and go; the postmaster reaps them)."""
    try:
        proc = psutil.Process(pid)
        times = proc.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in proc.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return float(total)
    except psutil.Error:
        return 0.0


def rss_mb(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


def child_env(settings: Settings, **overrides: Any) -> dict[str, str]:
    """The environment of a benchmarked child (`rtmh worker`, `rtmh notifier`): this process's
    environment without any RTMH_* / POSTGRES_* / KAFKA_* variable, then ``settings`` with
    ``overrides`` applied (``Settings.to_env``), so the child reads exactly these settings."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    return {**base, **settings.model_copy(update=overrides).to_env()}


def worker_env(
    settings: Settings, url: str, bootstrap: str, prefix: str, group: str
) -> dict[str, str]:
    """The environment of a benchmarked `rtmh worker`: these servers and settings only."""
    return child_env(
        settings,
        postgres_url=url,
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        # the bench's own topics only, whatever the user's environment maps to each kind
        log_topics="",
        metric_topics="",
        event_topics="",
        group_id=group,
        metrics_port=0,
        log_level="INFO",
    )


def notifier_env(settings: Settings, url: str, log_level: str = "WARNING") -> dict[str, str]:
    """The environment of a benchmarked `rtmh notifier`, allowed to reach the bench's loopback
    webhook receiver (a notifier refuses loopback unless told otherwise)."""
    from rtmh.bench.receiver import ArrivalReceiver
    from rtmh.notify.targets import extend_allow_list

    return child_env(
        settings,
        postgres_url=url,
        log_level=log_level,
        metrics_port=0,
        allowed_targets=extend_allow_list(settings.allowed_target_list, ArrivalReceiver.TARGET),
    )


def report(
    out: Console, tables: Iterable[RenderableType], result: dict[str, Any], json_file: Path | None
) -> None:
    """A bench's tables on ``out``, and every figure in ``json_file`` when one was asked for."""
    for table in tables:
        out.print(table)
    if json_file is not None:
        write_json(json_file, result)
        out.print(f"figures written to {json_file}")


def consoles() -> tuple[Console, Console]:
    """stdout for the figures, stderr for progress, both at the real width when piped
    (rtmh.console): a CI log gets whole table rows, not labels broken over four lines."""
    return make_console(), make_console(stderr=True)


def cli_settings(ctx: typer.Context, err: Console) -> Settings:
    """The settings `rtmh` parsed, or the environment's when called on its own."""
    obj = ctx.obj
    if isinstance(obj, Settings):
        return obj
    try:
        return load_settings()
    except ConfigError as error:
        err.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(2) from None
