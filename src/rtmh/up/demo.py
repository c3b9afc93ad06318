"""The demo of `rtmh up --demo`: a scripted story on five services, and a webhook receiver on
loopback so demo notifications travel the real delivery path (signed, retried, recorded).

Loopback is a target the notifier refuses by default (it is how a channel would reach services
that only listen locally), so the demo's notifier runs with the receiver's address added to
RTMH_ALLOWED_TARGETS (:func:`notifier_allowed_targets`); the default stays strict.

The story repeats every STORY_PERIOD seconds:
  10 s  deploy of checkout 2.4.1
  15 s  checkout: 35 % of requests fail for 15 s          -> error_rate_monitor incident
  25 s  payments: latency x12 for 20 s                    -> latency_monitor (p95) incident
  45 s  everything healthy again                          -> both incidents resolve
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg.types.json import Jsonb

from rtmh import simulate as sim
from rtmh.config import Settings
from rtmh.db.queries import load
from rtmh.notify.channels.webhook import SIGNATURE_HEADER, verify_signature
from rtmh.notify.targets import extend_allow_list

STORY_PERIOD = 150.0
DEMO_RATE = 400.0
#: the demo's producer waits this long to fill a batch: about a third as many batches as with
#: the 5 ms RTMH's clients use, so the embedded broker lists fewer on each fetch and rolls its log
#: half as often (`rtmh bench up-soak`: 29 % -> 21 % of a core on average), for at most 20 ms more
#: lag
DEMO_LINGER_MS = 20
DEMO_CHANNEL = "demo-webhook"
#: where the demo receiver listens, as an RTMH_ALLOWED_TARGETS entry
RECEIVER_HOST = "127.0.0.1"
RECEIVER_TARGET = f"{RECEIVER_HOST}/32"

SQL = load("demo")


def story() -> sim.Scenario:
    return sim.Scenario(
        "demo",
        "deploy and error burst on checkout, latency spike on payments, then recovery",
        phases=(
            sim.Phase(15, 30, "checkout", error_ratio=0.35),
            sim.Phase(25, 45, "payments", latency_factor=12.0),
        ),
        events=(sim.OneOff(10, "checkout", "deploy", {"version": "2.4.1", "by": "ci"}),),
        period=STORY_PERIOD,
        # healthy services err rarely: with 50-event windows a 5 % rule then never fires on luck
        base_error_ratio=0.001,
    )


@dataclass(frozen=True, slots=True)
class Delivery:
    at: float
    event: str
    title: str
    status: str
    signature_ok: bool


class DemoReceiver:
    """A webhook receiver on 127.0.0.1 that checks each delivery's HMAC signature."""

    def __init__(self, on_delivery: Callable[[Delivery], None] | None = None):
        self.secret = secrets.token_hex(16)
        self.deliveries: deque[Delivery] = deque(maxlen=50)
        self.on_delivery = on_delivery
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = verify_signature(receiver.secret, body, self.headers.get(SIGNATURE_HEADER))
                try:
                    doc = json.loads(body)
                    incident = doc.get("incident") or {}
                    delivery = Delivery(
                        time.time(),
                        str(doc.get("event")),
                        str(incident.get("title")),
                        str(incident.get("status")),
                        ok,
                    )
                except ValueError:
                    delivery = Delivery(time.time(), "?", "unreadable body", "?", ok)
                receiver.deliveries.append(delivery)
                if receiver.on_delivery is not None:
                    receiver.on_delivery(delivery)
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if ok else b'{"error": "bad signature"}')

            def log_message(self, format: str, *args: object) -> None:
                pass  # deliveries are shown by the live view instead

        self.server = ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)
        # request threads never hold up `up`'s shutdown (server_close joins non-daemon ones)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.server.server_address[1]}/hooks/rtmh"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notifier_allowed_targets(settings: Settings) -> str:
    """RTMH_ALLOWED_TARGETS for the demo's notifier: the user's allow-list plus the receiver."""
    return extend_allow_list(settings.allowed_target_list, RECEIVER_TARGET)


def configure(conn: psycopg.Connection, receiver_url: str, secret: str) -> None:
    """Point the demo channel at the receiver and route the story's rules to it, with quick
    resolve times and 50-event windows for ratio/quantile verdicts (fewer false alarms)."""
    with conn.transaction():
        conn.execute(
            SQL.upsert_demo_channel,
            (
                DEMO_CHANNEL,
                Jsonb({"url": receiver_url, "timeout_seconds": 5}),
                Jsonb({"hmac_secret": secret}),
            ),
        )
        conn.execute(SQL.route_story_rules, (DEMO_CHANNEL,))
