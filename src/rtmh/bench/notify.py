"""`rtmh bench notify`: incident committed -> webhook received, p50/p99 (issue 5: p99 < 500 ms).

One run:

1. PostgreSQL: POSTGRES_URL when set (a fresh database is created there and dropped after),
   else an embedded server with durable settings (fsync and synchronous commit on, as `rtmh up`).
2. A webhook receiver on loopback (:mod:`rtmh.bench.receiver`, HMAC checked) and an HMAC-signed
   webhook channel pointing at it.
3. The real notifier, ``python -m rtmh.notify.notifier``, in a process of its own (as in
   production: it shares no interpreter with the producer or the receiver).
4. A few warm-up notifications (process start, first connections), not counted.
5. N incidents, each with its outbox row, inserted in separate committed transactions spaced
   ``interval_ms`` apart (what the rules engine does); ``time.time()`` right after each COMMIT
   returns is compared with the receiver's ``time.time()`` on arrival of that notification.

The commit timestamp is taken after COMMIT returns, so the figures slightly under-state the true
latency by at most the commit's own round trip (tens of microseconds on loopback); the receiver's
timestamp is taken once the body is read.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import psycopg
import typer
from psycopg.types.json import Jsonb
from rich.console import Console
from rich.markup import escape

from rtmh.bench.common import (
    Databases,
    figures_table,
    machine_info,
    now_iso,
    postgres_info,
    progress_bar,
    write_json,
)
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.config import ConfigError, Settings, load_settings
from rtmh.db.connect import describe_url, normalise_url
from rtmh.embedded.process import child_setup
from rtmh.notify.render import IncidentSnapshot

TARGET_P99_MS: Final = 500.0
WARMUP: Final = 5
CHANNEL: Final = "bench-hook"
#: how long the notifier may take to deliver the warm-up (process start included)
STARTUP_TIMEOUT_S: Final = 60.0
#: how long after the last commit every notification must have arrived
DRAIN_TIMEOUT_S: Final = 30.0

INSERT_INCIDENT: Final = """
INSERT INTO incidents (id, title, severity, status, source, window_key, last_value, peak_value,
                       threshold, first_seen, last_seen, fingerprint)
VALUES (%s, %s, 'high', 'open', 'bench', %s, 0.12, 0.12, 0.05, %s, %s, %s)
"""

INSERT_NOTIFICATION: Final = """
INSERT INTO alert_notifications (incident_id, channel, event, idempotency_key, payload)
VALUES (%s, %s, 'open', %s, %s)
"""

INSERT_CHANNEL: Final = """
INSERT INTO notification_channels (name, type, config, secrets) VALUES (%s, 'webhook', %s, %s)
"""

STATUS_COUNTS: Final = """
SELECT status, count(*) FROM alert_notifications WHERE idempotency_key LIKE %s GROUP BY status
"""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarise(latencies_ms: Sequence[float]) -> dict[str, float]:
    values = sorted(latencies_ms)
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": values[0],
        "p50": percentile(values, 0.50),
        "p90": percentile(values, 0.90),
        "p99": percentile(values, 0.99),
        "max": values[-1],
        "mean": sum(values) / len(values),
    }


@contextmanager
def _postgres(postgres_url: str | None, workdir: Path, console: Console) -> Iterator[str]:
    """An admin URL: the given server, or an embedded one with durable settings."""
    if postgres_url:
        yield normalise_url(postgres_url)
        return
    from rtmh.embedded.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(workdir / "postgres", fast_unsafe=False, ephemeral=True)
    with console.status("starting embedded PostgreSQL"):
        server.start()
    try:
        yield server.admin_url()
    finally:
        server.stop()


@contextmanager
def _notifier_process(url: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    env.update(POSTGRES_URL=url, RTMH_LOG_LEVEL="WARNING", RTMH_METRICS_PORT="0")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtmh.notify.notifier"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=child_setup(),
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _snapshot(incident_id: str, service: str, now: datetime) -> IncidentSnapshot:
    return IncidentSnapshot(
        id=incident_id,
        title=f"bench_error_rate on {service}",
        severity="high",
        status="open",
        source="bench",
        window_key=service,
        rule_name="bench_error_rate",
        first_seen=now,
        last_seen=now,
        last_value=0.12,
        threshold=0.05,
        condition=">",
        peak_value=0.12,
        metric_type="error_rate",
    )


def _commit_one(conn: psycopg.Connection[Any], key: str, service: str) -> tuple[float, float]:
    """One incident and its outbox row in one transaction.

    Returns ``time.time()`` just before COMMIT was sent and once it returned: the commit took
    effect in between.
    """
    incident_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    payload = Jsonb({"incident": _snapshot(incident_id, service, now).to_dict()})
    with conn.transaction():
        conn.execute(
            INSERT_INCIDENT,
            (incident_id, f"bench_error_rate on {service}", service, now, now, key),
        )
        conn.execute(INSERT_NOTIFICATION, (incident_id, CHANNEL, key, payload))
        before = time.time()
    return before, time.time()


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run(
    postgres_url: str | None,
    count: int,
    interval_ms: float,
    console: Console,
) -> dict[str, Any]:
    """Run the benchmark and return every figure (see the module docstring)."""
    started_at = now_iso()
    workdir = Path(tempfile.mkdtemp(prefix="rtmh-bench-notify-"))
    try:
        with _postgres(postgres_url, workdir, console) as admin_url:
            databases = Databases(admin_url)
            try:
                url = databases.fresh("notify")
                result = _measure(url, count, interval_ms, workdir / "notifier.log", console)
                pg = postgres_info(url)
            finally:
                databases.drop_all()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    pg["mode"] = describe_url(postgres_url) if postgres_url else "embedded, durable (fsync on)"
    met = {"p99": result["latency_ms"].get("p99", math.inf) < TARGET_P99_MS}
    return {
        "benchmark": "notify",
        "started_at": started_at,
        "machine": machine_info(),
        "postgres": pg,
        "workload": {
            "notifications": count,
            "interval_ms": interval_ms,
            "warmup": WARMUP,
            "channel": "webhook, HMAC-SHA256 signed, loopback receiver (HTTP/1.1 keep-alive)",
            "notifier": "python -m rtmh.notify.notifier, separate process, default options",
            "measured": "time.time() once COMMIT returned -> time.time() when the receiver has "
            "the body (latency_from_commit_sent_ms: from just before COMMIT was sent)",
        },
        "results": result,
        "targets": {"p99_max_ms": TARGET_P99_MS},
        "targets_met": met,
    }


def _measure(
    url: str, count: int, interval_ms: float, log: Path, console: Console
) -> dict[str, Any]:
    run_id = uuid.uuid4().hex[:8]
    hmac_secret = secrets.token_hex(16)
    with ArrivalReceiver(hmac_secret) as receiver:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                INSERT_CHANNEL,
                (CHANNEL, Jsonb({"url": receiver.url}), Jsonb({"hmac_secret": hmac_secret})),
            )
        commits: dict[str, float] = {}
        commits_sent: dict[str, float] = {}
        with (
            _notifier_process(url, log) as proc,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            warm = {f"bench:{run_id}:w:{i}" for i in range(WARMUP)}
            with console.status("starting the notifier (warm-up notifications)"):
                for key in sorted(warm):
                    _commit_one(conn, key, "warmup")
                if not receiver.wait_for(warm, STARTUP_TIMEOUT_S):
                    raise RuntimeError(
                        f"the notifier delivered {receiver.arrived(warm)} of {WARMUP} warm-up "
                        f"notifications in {STARTUP_TIMEOUT_S:.0f} s (exit code {proc.poll()}):\n"
                        + _log_tail(log)
                    )
            interval = interval_ms / 1000.0
            with progress_bar(console) as progress:
                task = progress.add_task("commit -> received", total=count, note="")
                next_slot = time.perf_counter()
                for i in range(count):
                    key = f"bench:{run_id}:m:{i:06d}"
                    commits_sent[key], commits[key] = _commit_one(conn, key, f"svc{i % 50}")
                    received = len(receiver.arrivals) - WARMUP
                    progress.update(task, completed=i + 1, note=f"{received:,} received")
                    next_slot += interval
                    pause = next_slot - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                keys = set(commits)
                complete = receiver.wait_for(keys, DRAIN_TIMEOUT_S)
        notifier_exit = proc.returncode
        with psycopg.connect(url) as conn:
            statuses: dict[str, int] = dict(
                conn.execute(STATUS_COUNTS, (f"bench:{run_id}:m:%",)).fetchall()
            )
        arrivals = dict(receiver.arrivals)
        arrived = [k for k in sorted(keys) if k in arrivals]
        latencies = [(arrivals[k] - commits[k]) * 1000.0 for k in arrived]
        from_commit_sent = [(arrivals[k] - commits_sent[k]) * 1000.0 for k in arrived]
        return {
            "received": len(latencies),
            "missing": count - len(latencies),
            "complete": complete,
            "duplicates": receiver.duplicates,
            "bad_signatures": receiver.bad_signatures,
            "statuses": {str(k): int(v) for k, v in statuses.items()},
            "notifier_exit_code": notifier_exit,
            "latency_ms": summarise(latencies),
            # the same, from just before COMMIT was sent (includes the commit's own fsync)
            "latency_from_commit_sent_ms": summarise(from_commit_sent),
        }


def render(result: dict[str, Any]) -> Iterator[Any]:
    """The tables for the console."""
    r = result["results"]
    lat = r["latency_ms"]
    m, pg, w = result["machine"], result["postgres"], result["workload"]

    def ms(name: str) -> str:
        value = lat.get(name)
        return "-" if value is None or math.isnan(value) else f"{value:,.1f}"

    caption = (
        f"{m['cpu_model']}, {m['cpu_logical_cores']} cores, {m['ram_gb']} GB; {m['python']}; "
        f"PostgreSQL {pg['version']} ({pg['mode']}); one commit every {w['interval_ms']:g} ms"
    )
    yield figures_table(
        f"rtmh bench notify: {w['notifications']:,} notifications, incident commit -> "
        "webhook received",
        ("received", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms", "duplicates", "rows sent"),
        [
            [
                f"{r['received']:,} / {w['notifications']:,}",
                ms("p50"),
                ms("p90"),
                ms("p99"),
                ms("max"),
                ms("mean"),
                str(r["duplicates"]),
                f"{r['statuses'].get('sent', 0):,}",
            ]
        ],
        caption=caption,
    )
    ok = result["targets_met"]["p99"]
    yield figures_table(
        "target (issue 5)",
        ("target", "measured", ""),
        [
            [
                f"p99 < {result['targets']['p99_max_ms']:.0f} ms on loopback",
                f"{ms('p99')} ms",
                "[green]met[/]" if ok else "[red]missed[/]",
            ]
        ],
    )


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
        out, err = Console(), Console(stderr=True)
        settings = ctx.find_object(Settings)
        if settings is None:
            try:
                settings = load_settings()
            except ConfigError as exc:
                err.print(f"[bold red]error:[/] {exc}", highlight=False)
                raise typer.Exit(2) from None
        try:
            result = run(settings.postgres_url, count, interval_ms, err)
        except (RuntimeError, psycopg.Error, OSError) as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
            raise typer.Exit(1) from None
        for table in render(result):
            out.print(table)
        if json_file is not None:
            write_json(json_file, result)
            out.print(f"figures written to {json_file}")
        if result["results"]["missing"]:
            err.print(
                f"[bold red]error:[/] {result['results']['missing']} notifications were not "
                "received",
                highlight=False,
            )
            raise typer.Exit(1)
