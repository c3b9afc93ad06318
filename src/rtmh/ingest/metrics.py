"""The worker's own Prometheus metrics (exposed on RTMH_METRICS_PORT when set)."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

CONSUMED = Counter("rtmh_ingest_consumed_total", "messages consumed from Kafka", ["topic"])
WRITTEN = Counter("rtmh_ingest_written_total", "events committed to raw_events", ["topic"])
DEAD_LETTERED = Counter(
    "rtmh_ingest_dead_lettered_total", "messages committed to dead_letters", ["topic"]
)
FENCED = Counter(
    "rtmh_ingest_fenced_batches_total",
    "batches dropped: offsets moved under us, or the batch did not continue them",
)
LOG_RESETS = Counter("rtmh_ingest_log_resets_total", "broker logs found reset on assignment")
REFUSED = Counter(
    "rtmh_ingest_refused_total",
    "messages PostgreSQL refused for their data, isolated and dead-lettered by the safety net",
)
ISOLATION_ATTEMPTS = Counter(
    "rtmh_ingest_isolation_attempts_total",
    "extra savepoint attempts the safety net made to isolate refused messages",
)
PROBE_RETRIES = Counter(
    "rtmh_ingest_probe_retries_total",
    "read-backs of a stored offset that got no answer from the broker and were asked again",
)
CONFIRMED_COMMITS = Counter(
    "rtmh_ingest_confirmed_commits_total",
    "batches whose COMMIT reply was lost, found committed by the offsets on the retry",
)
OUT_OF_RANGE = Counter(
    "rtmh_ingest_out_of_range_total",
    "partitions whose fetch position the broker called out of range (start decided again)",
)
WINDOW_KEYS_FOLDED = Counter(
    "rtmh_window_keys_folded_total",
    "records whose window key was over RTMH_WINDOW_MAX_NEW_KEYS_PER_BATCH or "
    "RTMH_WINDOW_MAX_KEYS_PER_MINUTE: stored with their service, windowed under __other__",
)
DB_RETRIES = Counter("rtmh_ingest_db_retries_total", "checkpoint attempts that hit a DB error")
BATCH_SIZE = Histogram(
    "rtmh_ingest_batch_messages",
    "messages per committed batch",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
)
BATCH_SECONDS = Histogram(
    "rtmh_ingest_batch_commit_seconds",
    "time to write and commit one batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG = Gauge(
    "rtmh_ingest_consumer_lag",
    "high watermark minus next offset (the embedded broker under-reports it)",
    ["topic", "partition"],
)


def report_lag(consumer: Consumer, committed: Mapping[tuple[str, int], int]) -> None:
    """LAG per owned partition: the high watermark of the last fetch responses (no request)
    minus ``committed``, the next offset committed. A metric only: the embedded broker
    under-reports high watermarks."""
    for (topic, partition), done in committed.items():
        try:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
        except Exception:  # not fetched yet, or the partition just moved
            continue
        if high is not None and high >= 0:
            LAG.labels(topic, str(partition)).set(max(0, int(high) - done))
