"""`rtmh bench ingest`, the OTLP runs: the same steady traffic as OpenTelemetry export requests
(``rtmh.otlp_traffic``: one request per service and kind per 0.1 s of event time, so ~50 log
records or ~15 histogram / gauge points a message), produced to topics of their own and ingested by
the whole ``rtmh worker`` (windows + rules) into a fresh database, one run per encoding.

The figure is records stored per second (raw_events rows: one per log record or data point),
beside the native JSON worker's rows per second (one row a message there); issue 20's target is at
least half the JSON rate per record.
"""

from __future__ import annotations

from typing import Any

from rich.progress import Progress

from rtmh.bench.common import BenchServers, Databases
from rtmh.bench.ingest.traffic import Advance, OtlpWorkload, Produced, generate_otlp, produce
from rtmh.bench.ingest.workers import phase, run_worker
from rtmh.config import Settings
from rtmh.otlp_traffic import Format
from rtmh.records import Kind

#: issue 20: OTLP records/s at least this share of the native JSON worker's rows/s
OTLP_VS_JSON_MIN = 0.5


def otlp_figures(
    workload: OtlpWorkload, produced: Produced, worker: dict[str, Any]
) -> dict[str, Any]:
    """A worker run's figures (``workers.run_worker``, which counts messages) per record:
    ``events`` here are records, the raw_events rows they become."""
    messages, total = len(workload.messages), workload.total_records
    seconds = worker["seconds"]
    return {
        **worker,
        "format": workload.encoding,
        "events": total,
        "events_per_s": total / seconds,
        "cpu_us_per_event": worker["cpu_s"] / total * 1e6,
        "messages": messages,
        "messages_per_s": messages / seconds,
        "records": total,
        "records_per_s": total / seconds,
        "records_by_kind": workload.records,
        "records_per_message": total / messages,
        "avg_message_bytes": sum(len(v) for _, _, v in workload.messages) / messages,
        "produce_seconds": produced.seconds,
    }


def run_otlp(
    s: Settings,
    servers: BenchServers,
    dbs: Databases,
    records: int,
    prefix: str,
    encoding: Format,
    progress: Progress,
) -> dict[str, Any]:
    """About ``records`` records as ``encoding``, produced to topics of their own (``prefix``),
    through the whole worker into a fresh database; the figures per record."""
    workload: OtlpWorkload = phase(
        progress,
        f"generate {encoding}",
        records,
        lambda adv: _advanced(generate_otlp(records, encoding), adv, records),
        "rtmh.otlp_traffic.OtlpTraffic",
    )
    topics = {k.value: f"{prefix}{k.value}" for k in Kind}
    produced: Produced = phase(
        progress,
        f"produce {encoding}",
        len(workload.messages),
        lambda adv: produce(servers.bootstrap, topics, s.partitions, workload.messages, adv),
    )
    url = dbs.fresh(f"otlp_{encoding.replace('-', '_')}")
    worker = run_worker(
        s,
        servers,
        url,
        prefix,
        len(workload.messages),
        variant="worker",
        progress=progress,
        rows=workload.total_records,
        label=f"rtmh worker, {encoding}",
    )
    dbs.drop(url)
    return otlp_figures(workload, produced, worker)


def _advanced(workload: OtlpWorkload, advance: Advance, n: int) -> OtlpWorkload:
    advance(n)
    return workload
