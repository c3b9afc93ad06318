"""The peer: Prometheus and Alertmanager (the Debian packages `prometheus` and
`prometheus-alertmanager`), started by the bench with generated configs in a temp dir, on
loopback ports, one pair per profile.

The configs are written as JSON, which is YAML: no YAML emitter is needed and nothing is quoted
wrong."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from rtmh.bench.compare.model import Profile
from rtmh.bench.compare.traffic import ERRORS, REQUESTS
from rtmh.bench.processes import ChildProcess
from rtmh.embedded.process import free_port

INSTALL_HINT = "apt-get install -y prometheus prometheus-alertmanager"
ALERT = "BenchHighErrorRate"
THRESHOLD = 0.05
#: how long each server may take to answer /-/ready
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Binaries:
    prometheus: str
    alertmanager: str


def find_binaries(which: Callable[[str], str | None] = shutil.which) -> Binaries | None:
    """Both binaries (Debian names Alertmanager's `prometheus-alertmanager`), or None."""
    prometheus = which("prometheus")
    alertmanager = which("prometheus-alertmanager") or which("alertmanager")
    if prometheus is None or alertmanager is None:
        return None
    return Binaries(prometheus, alertmanager)


def version(binary: str) -> str:
    """The first line of ``binary --version`` (both print to stderr or stdout)."""
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unknown ({error})"
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "unknown"


def _duration(seconds: float) -> str:
    return f"{seconds:g}s"


def ratio_expr(window_s: float) -> str:
    """The alert's condition: the same error ratio RTMH's high_error_rate judges, per service."""
    w = _duration(window_s)
    return (
        f"sum by (service) (rate({ERRORS}[{w}])) / sum by (service) (rate({REQUESTS}[{w}]))"
        f" > {THRESHOLD:g}"
    )


def rules_config(profile: Profile) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": "rtmh-bench",
                "rules": [
                    {
                        "alert": ALERT,
                        "expr": ratio_expr(profile.rate_window_s),
                        "for": "0s",
                        "labels": {"severity": "high"},
                    }
                ],
            }
        ]
    }


def prometheus_config(profile: Profile, exporter: str, alertmanager: str) -> dict[str, Any]:
    return {
        "global": {
            "scrape_interval": _duration(profile.scrape_s),
            "evaluation_interval": _duration(profile.evaluation_s),
        },
        "rule_files": ["rules.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [{"job_name": "rtmh-bench", "static_configs": [{"targets": [exporter]}]}],
    }


def alertmanager_config(profile: Profile, webhook_url: str) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "bench",
            "group_by": ["service"],
            "group_wait": _duration(profile.group_wait_s),
            "group_interval": _duration(profile.group_interval_s),
            "repeat_interval": "4h",
        },
        "receivers": [
            {"name": "bench", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]}
        ],
    }


def firing_services(body: bytes) -> list[str]:
    """The ``service`` label of each firing alert in an Alertmanager webhook body."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    alerts = doc.get("alerts") if isinstance(doc, dict) else None
    out: list[str] = []
    for alert in alerts if isinstance(alerts, list) else []:
        if not isinstance(alert, dict) or alert.get("status") != "firing":
            continue
        service = (alert.get("labels") or {}).get("service")
        if isinstance(service, str):
            out.append(service)
    return out


class PeerPair:
    """Prometheus and Alertmanager for one profile, in ``workdir``; stopped on exit."""

    def __init__(
        self, profile: Profile, binaries: Binaries, exporter: str, webhook_url: str, workdir: Path
    ) -> None:
        self.profile = profile
        self.binaries = binaries
        self.exporter = exporter
        self.webhook_url = webhook_url
        self.workdir = workdir
        #: (name, process, log)
        self.procs: list[ChildProcess] = []
        self.prometheus_port = 0
        self.alertmanager_port = 0

    def __enter__(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        d = self.workdir
        d.mkdir(parents=True, exist_ok=True)
        self.alertmanager_port, self.prometheus_port = free_port(), free_port()
        am_addr = f"127.0.0.1:{self.alertmanager_port}"
        _write(d / "alertmanager.yml", alertmanager_config(self.profile, self.webhook_url))
        _write(d / "rules.yml", rules_config(self.profile))
        _write(d / "prometheus.yml", prometheus_config(self.profile, self.exporter, am_addr))
        self._spawn(
            "alertmanager",
            [
                self.binaries.alertmanager,
                f"--config.file={d / 'alertmanager.yml'}",
                f"--storage.path={d / 'alertmanager-data'}",
                f"--web.listen-address={am_addr}",
                "--cluster.listen-address=",  # one instance: no gossip port
            ],
        )
        self._spawn(
            "prometheus",
            [
                self.binaries.prometheus,
                f"--config.file={d / 'prometheus.yml'}",
                f"--storage.tsdb.path={d / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
            ],
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.procs.append(
            ChildProcess(
                f"{name} ({self.profile.name})",
                argv,
                self.workdir / f"{name}.log",
                cwd=self.workdir,
                stop_timeout_s=15,
                tail_lines=15,
            )
        )

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until both answer /-/ready; RuntimeError with the log's tail otherwise."""
        deadline = time.monotonic() + timeout
        ports = (self.alertmanager_port, self.prometheus_port)
        for child, port in zip(self.procs, ports, strict=True):
            while not _ready(port):
                if not child.alive() or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{child.name} is not ready (exit code {child.proc.poll()}); "
                        f"log tail:\n{child.tail()}"
                    )
                time.sleep(0.1)

    def check(self) -> None:
        for child in self.procs:
            child.check()

    def stop(self) -> None:
        for child in reversed(self.procs):
            child.stop()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False
