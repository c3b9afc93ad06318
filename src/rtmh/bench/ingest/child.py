"""`rtmh bench ingest`, inside the worker subprocess: the real worker with its timing hooks
(``rtmh.ingest.checkpoint.Timings``), run until the expected messages are committed; writes its
figures as JSON for the parent."""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from rtmh.ingest.batch import Batch


def _peak_rss_mb() -> float | None:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent
    across fork and exec, so it would report the benchmark's own memory."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class _Timings:
    """The worker's timing hooks (rtmh.ingest.checkpoint.Timings): the clock and CPU time at the
    first message taken, the writer thread's busy time, and the poll loop's waits for it."""

    def __init__(self) -> None:
        self.clock: dict[str, float] = {}
        self.cpu_at_first = 0.0
        self.writer_busy_s = 0.0
        self.loop_waits_for_writer_s = 0.0

    def took(self, messages: int) -> None:
        if "first_message" not in self.clock:
            self.clock["first_message"] = time.perf_counter()
            usage = resource.getrusage(resource.RUSAGE_SELF)
            self.cpu_at_first = usage.ru_utime + usage.ru_stime

    def wrote(self, seconds: float) -> None:
        self.writer_busy_s += seconds

    def waited(self, seconds: float) -> None:
        if "first_message" in self.clock:
            self.loop_waits_for_writer_s += seconds


def main(spec: dict[str, Any]) -> None:
    """Inside the worker subprocess: the real worker, with a clock on its first message and on
    every commit; stops once ``expected`` messages are committed."""
    import logging

    from rtmh.config import load_settings
    from rtmh.ingest.worker import Worker
    from rtmh.worker import build_worker

    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    url, bootstrap = settings.postgres_url, settings.kafka_bootstrap_servers
    assert url and bootstrap
    expected: int = spec["expected"]
    variant = spec["variant"]
    timings = _Timings()
    if variant == "worker":
        worker = build_worker(settings, url, bootstrap, timings=timings)
    elif variant == "worker_windows":
        worker = build_worker(settings, url, bootstrap, rules=False, timings=timings)
    else:
        worker = Worker(settings, url, bootstrap, timings=timings)
    started = time.perf_counter()
    committed = [0, 0]  # messages, batches

    def on_commit(batch: Batch, _touched: object) -> None:
        now = time.perf_counter()
        timings.clock.setdefault("first_commit", now)
        timings.clock["last_commit"] = now
        committed[0] += batch.messages
        committed[1] += 1
        if committed[0] >= expected:
            worker.stop()

    worker.after_commit.append(on_commit)
    profile_to = os.environ.get("RTMH_BENCH_PROFILE")
    if profile_to:  # for whoever optimises the hot path: cProfile of the poll loop
        import cProfile

        cProfile.runctx("worker.run()", globals(), {"worker": worker}, profile_to)
    else:
        worker.run()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "committed": committed[0],
        "batches": committed[1],
        "startup_s": timings.clock.get("first_message", started) - started,
        "first_message": timings.clock.get("first_message", 0.0),
        "first_commit": timings.clock.get("first_commit", 0.0),
        "last_commit": timings.clock.get("last_commit", 0.0),
        "cpu_s": usage.ru_utime + usage.ru_stime - timings.cpu_at_first,
        "vm_hwm_mb": _peak_rss_mb(),
        "writer_busy_s": timings.writer_busy_s,
        "loop_waits_for_writer_s": timings.loop_waits_for_writer_s,
    }
    Path(spec["result"]).write_text(json.dumps(result))
