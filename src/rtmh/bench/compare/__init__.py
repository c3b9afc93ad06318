"""`rtmh bench compare`: the same error bursts through RTMH and through Prometheus +
Alertmanager at once (issue 16), burst start -> webhook received for each (docs/compare.md).

One run:

1. A per-service request and error counter exporter (prometheus-client) on a loopback port, a
   webhook receiver per system, and for each profile (``tight``, ``default``) a Prometheus and an
   Alertmanager started from generated configs in the run's temp dir.
2. RTMH as bench detect runs it: a fresh database with only ``high_error_rate`` (error_rate >
   5 %, min_count 50), the real worker and notifier, the webhook channel at our receiver.
3. One traffic generator (`rtmh simulate`'s): every log line goes to Kafka and, at the same
   moment, into the counters, so both systems judge exactly the same requests. Bursting
   services, calm ones, and a quiet one with a few requests and exactly one error.
4. Per burst and system: its first line's time -> the first webhook for its service; missed
   after the profile's deadline; webhooks for a service with no burst then are false alerts.

The modules: ``model`` (profiles, services, schedule), ``traffic`` (exporter, traffic),
``peer`` (configs, processes), ``run``, ``measure`` (figures), ``render``, ``command``.
"""

from __future__ import annotations

from rtmh.bench.compare.command import register

__all__ = ["register"]
