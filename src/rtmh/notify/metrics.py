"""The notifier's own Prometheus metrics (exposed on RTMH_METRICS_PORT when set).

In a module of their own: registered once per process, whichever module imports them first.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENT = Counter("rtmh_notify_sent_total", "notifications delivered", ["channel"])
FAILED = Counter(
    "rtmh_notify_failed_total", "delivery attempts that failed and will be retried", ["channel"]
)
DEAD = Counter(
    "rtmh_notify_dead_total",
    "notifications given up (attempts exhausted or permanent error)",
    ["channel"],
)
SUPPRESSED = Counter(
    "rtmh_notify_suppressed_total", "notifications muted by a silence at send time", ["channel"]
)
ATTEMPT_SECONDS = Histogram(
    "rtmh_notify_attempt_seconds",
    "duration of one delivery attempt (request sent to answer read)",
    ["type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DELIVERY_LATENCY = Histogram(
    "rtmh_notify_delivery_latency_seconds",
    "notification queued (row created) to delivered, retries included",
    ["type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
