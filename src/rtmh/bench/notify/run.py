"""Running `rtmh bench notify`: PostgreSQL, a loopback receiver, the real notifier, warm-up,
then incidents committed at a steady pace; what arrived when goes to measure.py."""

from __future__ import annotations

import secrets
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb
from rich.console import Console

from rtmh.bench.common import (
    SQL,
    Databases,
    bench_servers,
    notifier_env,
    now_iso,
    postgres_info,
    progress_bar,
)
from rtmh.bench.notify.measure import Observed, figures
from rtmh.bench.processes import RtmhProcess, log_tail
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.config import Settings
from rtmh.db.connect import describe_url
from rtmh.records import IncidentSnapshot

WARMUP: Final = 5
CHANNEL: Final = "bench-hook"
#: how long the notifier may take to deliver the warm-up (process start included)
STARTUP_TIMEOUT_S: Final = 60.0
#: how long after the last commit every notification must have arrived
DRAIN_TIMEOUT_S: Final = 30.0


def run(settings: Settings, count: int, interval_ms: float, console: Console) -> dict[str, Any]:
    """Run the benchmark and return every figure (see the package docstring)."""
    started_at = now_iso()
    postgres_url = settings.postgres_url
    with bench_servers(postgres_url, None, console=console, broker=False) as srv:
        databases = Databases(srv.admin_url)
        try:
            url = databases.fresh("notify")
            log = srv.workdir / "notifier.log"
            observed = _observe(settings, url, count, interval_ms, log, console)
            pg = postgres_info(url)
        finally:
            databases.drop_all()
    pg["mode"] = describe_url(postgres_url) if postgres_url else "embedded, durable (fsync on)"
    return figures(observed, started_at=started_at, postgres=pg, warmup=WARMUP)


def _observe(
    settings: Settings, url: str, count: int, interval_ms: float, log: Path, console: Console
) -> Observed:
    run_id = uuid.uuid4().hex[:8]
    hmac_secret = secrets.token_hex(16)
    env = notifier_env(settings, url)
    with ArrivalReceiver(hmac_secret) as receiver:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                SQL.insert_webhook_channel,
                (CHANNEL, Jsonb({"url": receiver.url}), Jsonb({"hmac_secret": hmac_secret})),
            )
        with (
            RtmhProcess("notifier", env, log, stop_timeout_s=30) as notifier,
            psycopg.connect(url, autocommit=True) as conn,
        ):
            _warm_up(conn, receiver, notifier, run_id, console)
            commits_sent, commits = _commit_paced(
                conn, receiver, run_id, count, interval_ms, console
            )
            complete = receiver.wait_for(set(commits), DRAIN_TIMEOUT_S)
        with psycopg.connect(url) as conn:
            rows = conn.execute(SQL.notification_status_counts, (f"bench:{run_id}:m:%",))
            statuses = {str(k): int(v) for k, v in rows.fetchall()}
        return Observed(
            count=count,
            interval_ms=interval_ms,
            commits_sent=commits_sent,
            commits=commits,
            arrivals=dict(receiver.arrivals),
            complete=complete,
            duplicates=receiver.duplicates,
            bad_signatures=receiver.bad_signatures,
            statuses=statuses,
            notifier_exit_code=notifier.returncode,
        )


def _warm_up(
    conn: psycopg.Connection[Any],
    receiver: ArrivalReceiver,
    notifier: RtmhProcess,
    run_id: str,
    console: Console,
) -> None:
    """A few notifications, not counted: the notifier's start and first connections."""
    warm = {f"bench:{run_id}:w:{i}" for i in range(WARMUP)}
    with console.status("starting the notifier (warm-up notifications)"):
        for key in sorted(warm):
            _commit_one(conn, key, "warmup")
        if not receiver.wait_for(warm, STARTUP_TIMEOUT_S):
            raise RuntimeError(
                f"the notifier delivered {receiver.arrived(warm)} of {WARMUP} warm-up "
                f"notifications in {STARTUP_TIMEOUT_S:.0f} s (exit code {notifier.proc.poll()}):"
                f"\n{log_tail(notifier.log_path, 20)}"
            )


def _commit_paced(
    conn: psycopg.Connection[Any],
    receiver: ArrivalReceiver,
    run_id: str,
    count: int,
    interval_ms: float,
    console: Console,
) -> tuple[dict[str, float], dict[str, float]]:
    """``count`` incidents, one commit every ``interval_ms``; per key the time just before
    COMMIT was sent and once it returned."""
    commits_sent: dict[str, float] = {}
    commits: dict[str, float] = {}
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
    return commits_sent, commits


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
            SQL.insert_incident,
            (incident_id, f"bench_error_rate on {service}", service, now, now, key),
        )
        conn.execute(SQL.insert_notification, (incident_id, CHANNEL, key, payload))
        before = time.time()
    return before, time.time()
