"""One traffic generator for both systems: every log line the simulator makes goes to Kafka (for
RTMH) and, at the same moment, into per-service request and error counters that Prometheus
scrapes from a loopback HTTP port. Both systems therefore judge exactly the same requests."""

from __future__ import annotations

import math
from types import TracebackType
from typing import Any, Self

from prometheus_client import CollectorRegistry, Counter, start_http_server

from rtmh import simulate as sim
from rtmh.bench.detect.traffic import BurstTraffic

REQUESTS = "rtmh_bench_requests_total"
ERRORS = "rtmh_bench_errors_total"
_HOST = "127.0.0.1"


class Exporter:
    """``rtmh_bench_requests_total{service}`` and ``rtmh_bench_errors_total{service}`` on
    ``http://127.0.0.1:<port>/metrics``; every series exists at 0 from the start, so the first
    error of a service is an increase `rate` can see (a series born at 1 shows none)."""

    def __init__(self, services: list[str]) -> None:
        self.registry = CollectorRegistry()
        # prometheus-client appends _total to a counter's name itself
        self.requests = Counter(
            REQUESTS.removesuffix("_total"), "log lines", ["service"], registry=self.registry
        )
        self.errors = Counter(
            ERRORS.removesuffix("_total"), "error log lines", ["service"], registry=self.registry
        )
        self._series = {
            s: (self.requests.labels(service=s), self.errors.labels(service=s)) for s in services
        }
        #: log lines per service, as counted (the JSON reports the quiet service's)
        self.totals = dict.fromkeys(services, 0)
        self._server: Any = None
        self.port = 0

    def count(self, service: str, error: bool) -> None:
        requests, errors = self._series[service]
        self.totals[service] += 1
        requests.inc()
        if error:
            errors.inc()

    @property
    def target(self) -> str:
        return f"{_HOST}:{self.port}"

    def __enter__(self) -> Self:
        self._server, _thread = start_http_server(0, addr=_HOST, registry=self.registry)
        self.port = int(self._server.server_port)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class CompareTraffic(BurstTraffic):
    """Bench detect's burst traffic, also counted into the exporter, plus one planted error of
    the quiet service at ``quiet_at`` seconds."""

    def __init__(
        self, *args: Any, exporter: Exporter, quiet: str, quiet_at: float, **kwargs: Any
    ) -> None:
        self.exporter = exporter
        super().__init__(*args, **kwargs)
        self.quiet_error = sim.Phase(quiet_at, quiet_at, quiet, error_ratio=1.0)
        #: time.time() when the quiet service's one error was handed to the producer
        self.quiet_error_sent: float | None = None

    def _observe(self, line: sim.LogLine) -> None:
        super()._observe(line)
        self.exporter.count(line.service, line.error)
        if line.phase is self.quiet_error:
            self.quiet_error_sent = line.ts

    def plant_due(self, t: float) -> None:
        """The quiet service's one error, once ``t`` has reached its time."""
        if self.quiet_error_sent is None and t >= self.quiet_error.start:
            self._produce(*self.traffic.one_log(self.quiet_error))


def quiet_phase(quiet: str) -> sim.Phase:
    """The quiet service never errs by chance: its only error is the planted one."""
    return sim.Phase(0.0, math.inf, quiet, error_ratio=0.0)
