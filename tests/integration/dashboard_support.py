"""A real hub for the browser tests: `rtmh up` on its embedded defaults, a webhook receiver the
rules notify, error bursts produced to its Kafka, and Chromium from the system (Debian's
package) driven by Playwright.

Never ``playwright install``: the browser is the one the machine has (``apt-get install -y
chromium``; .ci/run does it), found at RTMH_CHROMIUM or on the PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from rtmh import simulate as sim
from rtmh.bench.receiver import ArrivalReceiver
from rtmh.kafka.client import make_producer

from .ingest_support import wait_for
from .up_support import UpRun

#: the channel the tests' rule notifies: a receiver in the test process
CHANNEL = "browser-hook"
RULE = "high_error_rate"
_BROKER = re.compile(r"broker \(tansu\) ready at (\S+)")
_LINK = re.compile(r"sign in with this link .*: (http://\S+/login\?code=\S+)")


def chromium_path() -> str:
    found = os.environ.get("RTMH_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None
    )
    if not found:
        raise AssertionError(
            "the browser tests need Chromium: apt-get install -y chromium (or set RTMH_CHROMIUM "
            "to a Chromium binary); .ci/run installs it"
        )
    return found


@dataclass
class Hub:
    """A running `rtmh up` and what the tests need to drive it."""

    up: UpRun
    data_dir: Path
    api_url: str
    db_url: str
    bootstrap: str
    token: str
    login_link: str
    receiver: ArrivalReceiver

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(sql, params).fetchall()

    def open_incident(self, service: str) -> str | None:
        rows = self.query(
            "SELECT id::text FROM incidents WHERE window_key = %s "
            "AND status IN ('open', 'investigating')",
            (service,),
        )
        return str(rows[0][0]) if rows else None


@contextmanager
def running_hub(env: dict[str, str]) -> Iterator[Hub]:
    """`rtmh up` with quick windows (10 s, sliding by 2 s) and the receiver allowed, the sample
    error-rate rule alone enabled and routed to the receiver."""
    receiver = ArrivalReceiver().start()
    env = {
        **env,
        "RTMH_WINDOW_SIZE_S": "10",
        "RTMH_WINDOW_SLIDE_S": "2",
        "RTMH_ALLOWED_TARGETS": ArrivalReceiver.TARGET,
    }
    up = UpRun(env)
    try:
        up.wait_for_line("RTMH is up", 120)
        data_dir = Path(env["RTMH_DATA_DIR"])
        hub_file = json.loads((data_dir / "run" / "hub.json").read_text())
        broker = _BROKER.search(up.output())
        link = _LINK.search(up.output())
        assert broker and link, up.output()
        hub = Hub(
            up=up,
            data_dir=data_dir,
            api_url=hub_file["api_url"],
            db_url=hub_file["postgres_url"],
            bootstrap=broker.group(1),
            token=(data_dir / "run" / "api-token").read_text().strip(),
            login_link=link.group(1),
            receiver=receiver,
        )
        with psycopg.connect(hub.db_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO notification_channels (name, type, config, enabled) "
                "VALUES (%s, 'webhook', %s, true)",
                (CHANNEL, json.dumps({"url": receiver.url, "timeout_seconds": 5})),
            )
            # the rules trigger NOTIFYs the worker, which reloads them at once. An incident must
            # stay live until the page acts on it: once a burst stops its condition clears, and
            # with 10 s here CI saw one resolve by itself 19 s after opening, before the page
            # silenced and resolved it (the tests resolve by hand; none waits for this)
            conn.execute(
                "UPDATE alert_rules SET enabled = (name = %s), channels = ARRAY[%s], "
                "min_count = 20, resolve_after_seconds = 3600",
                (RULE, CHANNEL),
            )
        worker_log = data_dir / "logs" / "worker.log"
        wait_for(
            lambda: worker_log.exists() and "assigned " in worker_log.read_text(),
            120,
            "the worker consuming",
        )
        yield hub
    finally:
        up.proc.send_signal(2)  # SIGINT: up stops its children in order
        try:
            up.finish(120)
        finally:
            receiver.close()


class Burst:
    """Error traffic for one service (half its lines are errors) beside a healthy one, produced
    to the hub's Kafka from a thread until stopped."""

    def __init__(self, hub: Hub, service: str, rate: float = 200, longest_s: float = 120):
        self.hub = hub
        self.service = service
        self._stop = threading.Event()
        scenario = sim.Scenario(
            "browser", f"{service} errs", phases=(sim.Phase(0, longest_s, service, 0.5),)
        )
        self._traffic = sim.Traffic(scenario, (service, f"{service}-ok"), seed=11)
        self._rate = rate
        self._longest_s = longest_s
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        producer = make_producer(self.hub.bootstrap)

        def produce(kind: str, key: bytes, value: bytes) -> None:
            producer.produce(f"rtmh.{kind}", key=key, value=value)

        sim.run(
            produce,
            lambda: producer.poll(0),
            self._traffic,
            self._rate,
            self._longest_s,
            stop=self._stop.is_set,
        )
        producer.flush(30)

    def __enter__(self) -> Burst:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def incident_from_burst(hub: Hub, service: str) -> str:
    """Burst until the hub opens an incident on ``service`` (seen in PostgreSQL); its id."""
    with Burst(hub, service):
        wait_for(lambda: hub.open_incident(service) is not None, 120, f"an incident on {service}")
    found = hub.open_incident(service)
    assert found is not None
    return found


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    wait_for(predicate, timeout, what)
