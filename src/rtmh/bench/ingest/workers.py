"""`rtmh bench ingest`, one worker run: ``rtmh worker`` in a subprocess of its own
(``python -m rtmh.bench.ingest``, see ``child``) until it committed the expected messages, watched
for its RSS and progress, then checked against what PostgreSQL holds; and the progress phases
every run of the benchmark goes through."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg
from rich.progress import Progress

from rtmh.bench.common import BenchServers, worker_env
from rtmh.bench.ingest.traffic import Advance
from rtmh.config import Settings
from rtmh.db.queries import load

BENCH_SQL = load("bench")

#: a worker that commits nothing new for this long has failed
STALL_SECONDS = 120.0


#: worker variants: result key -> (label, what the subprocess builds)
VARIANTS = {
    "worker": "rtmh worker (windows + rules)",
    "worker_windows": "worker: windows, no rules",
    "worker_plain": "worker: ingest only",
}


def _committed(url: str, group: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            BENCH_SQL.ingest_committed,
            (group,),
        ).fetchone()
    return int(row[0]) if row else 0


def run_worker(
    settings: Settings,
    servers: BenchServers,
    url: str,
    prefix: str,
    expected: int,
    *,
    variant: str,
    progress: Progress,
    rows: int | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """One worker subprocess until it committed ``expected`` messages, checked against the
    ``rows`` they hold (raw_events + dead_letters; ``expected``, one a message, by default)."""
    label = label or VARIANTS[variant]
    rows = expected if rows is None else rows
    group = f"rtmh-bench-{uuid.uuid4().hex[:8]}"
    result_path = servers.workdir / f"{group}.json"
    log_path = servers.workdir / f"{group}.log"
    env = worker_env(settings, url, servers.bootstrap, prefix, group)
    if os.environ.get("RTMH_BENCH_PROFILE"):
        env["RTMH_BENCH_PROFILE"] = f"{os.environ['RTMH_BENCH_PROFILE']}.{variant}"
    task = progress.add_task(label, total=expected, note="joining the group")
    spec = {"variant": variant, "expected": expected, "result": str(result_path)}
    servers_cpu = servers.cpu_seconds()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rtmh.bench.ingest", json.dumps(spec)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    peak_rss = 0
    handle = psutil.Process(proc.pid)
    last_done, last_change = 0, time.monotonic()
    next_poll = 0.0
    try:
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak_rss = max(peak_rss, handle.memory_info().rss)
            now = time.monotonic()
            if now >= next_poll:
                next_poll = now + 0.25
                done = _committed(url, group)
                if done != last_done:
                    last_done, last_change = done, now
                note = f"RSS {peak_rss / 2**20:.0f} MB" if done else "joining the group"
                progress.update(task, completed=done, note=note)
                if now - last_change > STALL_SECONDS:
                    raise RuntimeError(
                        f"worker committed nothing for {STALL_SECONDS:.0f} s; log tail:\n"
                        + _tail(log_path)
                    )
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    servers_after = servers.cpu_seconds()
    if proc.returncode != 0 or not result_path.exists():
        raise RuntimeError(f"worker exited with {proc.returncode}; log tail:\n{_tail(log_path)}")
    child = json.loads(result_path.read_text())
    progress.update(task, completed=expected, note=f"RSS {peak_rss / 2**20:.0f} MB")
    with psycopg.connect(url) as conn:
        row = conn.execute(BENCH_SQL.ingest_stored).fetchone()
    assert row is not None
    stored, dead, windows_rows = (int(v) for v in row)
    if stored + dead != rows or child["committed"] != expected:
        raise RuntimeError(
            f"worker stored {stored} rows and {dead} dead letters, committed "
            f"{child['committed']} messages; expected {rows} rows, {expected} messages"
        )
    seconds = child["last_commit"] - child["first_message"]
    return {
        "variant": label,
        "stored": stored,
        "dead_letters": dead,
        "events": expected,
        "seconds": seconds,
        "events_per_s": expected / seconds,
        "batches": child["batches"],
        "first_to_last_commit_s": child["last_commit"] - child["first_commit"],
        "startup_s": child["startup_s"],
        "cpu_s": child["cpu_s"],
        "cpu_us_per_event": child["cpu_s"] / expected * 1e6,
        # the kernel's high-water mark; psutil, sampling every 20 ms, can only see less
        "rss_peak_mb": max(peak_rss / 2**20, child["vm_hwm_mb"] or 0.0),
        "rss_peak_sampled_mb": peak_rss / 2**20,
        "metrics_agg_rows": windows_rows,
        "writer_busy_s": child["writer_busy_s"],
        "loop_waits_for_writer_s": child["loop_waits_for_writer_s"],
        # whole subprocess lifetime (group join included), embedded servers only
        "server_cpu_s": {k: servers_after[k] - v for k, v in servers_cpu.items()},
    }


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def phase(
    progress: Progress, label: str, total: int, work: Callable[[Advance], Any], note: str = ""
) -> Any:
    task = progress.add_task(label, total=total, note=note)

    def advance(k: int) -> None:
        progress.advance(task, k)

    out = work(advance)
    progress.update(task, completed=total)
    return out
