"""`rtmh bench ingest` end to end (small, no timing assertions), and the hand-written COPY text
the worker and the benchmark's ceiling share, checked against psycopg's own row formatting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from rtmh.embedded.postgres import EmbeddedPostgres
from rtmh.ingest.batch import Batch
from rtmh.ingest.copy_text import RAW_COLUMNS, raw_events_copy, raw_events_row
from rtmh.ingest.store import SQL as INGEST_SQL
from rtmh.records import DecodedRecord, KafkaMessage, Kind


def test_bench_ingest_writes_its_figures(
    pg_server: EmbeddedPostgres, broker: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RTMH_", "POSTGRES_", "KAFKA_"))
    }
    # a wide console: rich wraps table cells to 80 columns without a terminal
    env.update(POSTGRES_URL=pg_server.admin_url(), KAFKA_BOOTSTRAP_SERVERS=broker, COLUMNS="200")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rtmh.cli",
            "bench",
            "ingest",
            "--events",
            "5000",
            "--json",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "COPY ceiling" in proc.stdout and "naive" in proc.stdout, proc.stdout
    result = json.loads(out.read_text())

    assert result["benchmark"] == "ingest"
    assert result["workload"]["events"] == 5000
    assert sum(result["workload"]["by_topic"].values()) == 5000
    assert set(result["workload"]["by_topic"]) <= {"logs", "metrics", "events"}
    for key in ("cpu_model", "cpu_logical_cores", "ram_gb", "python", "psycopg", "librdkafka"):
        assert result["machine"][key], key
    assert result["postgres"]["version"]
    assert result["postgres"]["settings"]["fsync"] in ("on", "off")

    figures = result["results"]
    ceiling = figures["copy_ceiling"]
    assert ceiling["rows"] == 5000 and ceiling["rows_per_s"] > 0
    assert len(ceiling["runs_rows_per_s"]) == 2
    assert ceiling["rows_per_s"] == max(ceiling["runs_rows_per_s"]), "the best run"
    for key in ("worker", "worker_windows", "worker_plain"):
        run = figures[key]
        assert run["events"] == 5000, key
        assert run["seconds"] > 0, key
        assert run["events_per_s"] == pytest.approx(5000 / run["seconds"]), key
        assert run["batches"] >= 1 and run["cpu_s"] > 0, key
        assert 0 < run["rss_peak_mb"] < 2000, key
    assert figures["worker"]["metrics_agg_rows"] > 0  # the windows were merged
    assert figures["worker_windows"]["metrics_agg_rows"] > 0
    assert figures["worker_plain"]["metrics_agg_rows"] == 0
    naive = figures["naive"]
    assert naive["messages"] == 5000 and naive["events_per_s"] > 0
    net = figures["safety_net"]  # the run raises unless the net found each refused message
    assert net["batch_messages"] == 5000 and net["repeats"] >= 3
    assert net["clean_ms"] > 0 and net["one_refused_ms"] > 0
    assert net["extra_attempts"] >= 3  # split around the named line, then the message alone
    assert "safety net" in proc.stdout

    # the ratios are the figures' ratios, and each target's verdict is its ratio's
    ratios = result["ratios"]
    worker, plain, windows = (figures[k] for k in ("worker", "worker_plain", "worker_windows"))
    assert ratios["worker_vs_ceiling"] == pytest.approx(
        worker["events_per_s"] / ceiling["rows_per_s"]
    )
    assert ratios["ingest_worker_vs_ceiling"] == pytest.approx(
        plain["events_per_s"] / ceiling["rows_per_s"]
    )
    assert ratios["worker_vs_naive"] == pytest.approx(
        worker["events_per_s"] / naive["events_per_s"]
    )
    assert ratios["windows_overhead"] == pytest.approx(windows["seconds"] / plain["seconds"] - 1)
    targets = result["targets"]
    rss = max(figures[k]["rss_peak_mb"] for k in ("worker", "worker_windows", "worker_plain"))
    assert result["targets_met"] == {
        "ingest_worker_vs_ceiling": ratios["ingest_worker_vs_ceiling"]
        >= targets["worker_vs_ceiling_min"],
        "worker_vs_ceiling": ratios["worker_vs_ceiling"] >= targets["worker_vs_ceiling_min"],
        "worker_vs_naive": ratios["worker_vs_naive"] >= targets["worker_vs_naive_min"],
        "worker_rss": rss < targets["worker_rss_max_mb"],
        "windows_overhead": ratios["windows_overhead"] <= targets["windows_overhead_max"],
    }

    # issue 20: the whole worker on OTLP, records (rows) per second beside the JSON worker's
    otlp = result["otlp"]
    assert set(otlp["runs"]) == {"otlp-proto", "otlp-json"}
    assert "OTLP" in proc.stdout
    for fmt, run in otlp["runs"].items():
        assert run["format"] == fmt
        assert run["records"] >= 5000 and run["records_per_message"] > 5, fmt
        assert (run["stored"], run["dead_letters"]) == (run["records"], 0), fmt
        assert run["records_per_s"] == pytest.approx(run["records"] / run["seconds"]), fmt
        assert run["metrics_agg_rows"] > 0, fmt
        ratio = otlp["vs_json_worker"][fmt]
        assert ratio == pytest.approx(run["records_per_s"] / worker["events_per_s"]), fmt
        assert otlp["targets_met"][fmt] == (ratio >= otlp["target_vs_json_min"]), fmt


# --- the COPY text ---------------------------------------------------------------------------

TRICKY: list[tuple[bytes | None, DecodedRecord]] = [
    (
        b"api",
        DecodedRecord(Kind.LOGS, '{"msg":"plain"}', 1_700_000_000.0, "api", "h1", "info"),
    ),
    (
        None,
        DecodedRecord(
            Kind.LOGS,
            '{"msg": "quote \\" backslash \\\\ newline \\n tab \\t",\n\t"level":"error"}\r\n',
            1_700_000_000.0000005,  # half a microsecond: datetime rounds half to even
            "svc\\with\tescapes",
            None,
            None,
            flags=("ts_out_of_range",),
        ),
    ),
    (
        b"key\twith\nspecials\\",
        DecodedRecord(
            Kind.METRICS,
            '{"name":"caf\u00e9 \U0001f680","value":1.5}',
            1_700_000_000.9999996,  # rounds up into the next second
            "m\u00fcnchen",
            "host\\x",
            None,
            flags=("ts_out_of_range", "level_unrecognised"),
        ),
    ),
    (
        b"\xff\xfe not utf-8",
        DecodedRecord(Kind.EVENTS, "[]", 0.5, "e", "h", "warn"),
    ),
    (
        b"nul\x00key\\",
        DecodedRecord(Kind.LOGS, '{"k":1}', 1_700_000_001.0, "s", "h", "info"),
    ),
    (
        b"",
        DecodedRecord(
            Kind.LOGS, '{"a":{"b":[1,2,{"c":null}]}}', 1_799_999_999.123456, "s", "", "x"
        ),
    ),
]


def _batch() -> Batch:
    batch = Batch()
    for offset, (key, rec) in enumerate(TRICKY):
        batch.add(KafkaMessage("t.logs", offset % 2, offset, key, b"-", None), rec, offset % 2 + 3)
    return batch


def _rows_via_psycopg(batch: Batch) -> list[tuple[object, ...]]:
    """The rows as the worker wrote them before it formatted COPY text itself."""
    return [
        raw_events_row(msg, rec, batch.progress[(msg.topic, msg.partition)].generation)
        for msg, rec in batch.records
    ]


def test_copy_text_stores_what_psycopg_write_row_stores(db_url: str) -> None:
    batch = _batch()
    select = f"SELECT {RAW_COLUMNS} FROM raw_events ORDER BY kafka_offset"
    with psycopg.connect(db_url) as conn:
        with conn.cursor().copy(INGEST_SQL.copy_raw_events) as copy:
            copy.write(raw_events_copy(batch))
        ours = conn.execute(select).fetchall()
        conn.execute("DELETE FROM raw_events")
        with conn.cursor().copy(INGEST_SQL.copy_raw_events) as copy:
            for row in _rows_via_psycopg(batch):
                copy.write_row(row)
        theirs = conn.execute(select).fetchall()
    assert len(ours) == len(TRICKY)
    assert ours == theirs
    # and the timestamps are the microseconds datetime.fromtimestamp gives
    # (columns as RAW_COLUMNS: record_index is the 4th, event_time the 9th)
    assert [r[8] for r in ours] == [datetime.fromtimestamp(t.event_time, UTC) for _, t in TRICKY]
    # keys: text when clean, else an escaped text and the exact bytes
    keys = {bytes(r[6]) if r[6] is not None else r[5] for r in ours}
    assert keys == {
        "api",
        None,
        "key\twith\nspecials\\",
        b"\xff\xfe not utf-8",
        b"nul\x00key\\",
        "",
    }
