"""A webhook receiver for benchmarks: loopback HTTP/1.1, records when each notification arrived.

``time.time()`` is taken once the whole request (headers and body) has been read, so a latency
measured against a commit timestamp of the same clock covers everything up to "the receiver has
the notification". Keep-alive is on, as with a real receiver behind a load balancer, so the
notifier's connection pool is measured the way it runs. The HMAC signature is checked on every
request (a bad one is counted, not rejected: it is a finding, not a reason to retry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

from rtmh.notify.channels.webhook import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature

_LOCALHOST: Final = "127.0.0.1"


class ArrivalReceiver:
    """``with ArrivalReceiver(secret) as r:`` then point a webhook channel at ``r.url``.

    The notifier that delivers to it must allow ``TARGET`` (RTMH_ALLOWED_TARGETS): loopback is
    refused by default.
    """

    #: the allow-list entry that lets a notifier reach this receiver
    TARGET: Final = f"{_LOCALHOST}/32"

    def __init__(
        self, secret: str | None = None, on_body: Callable[[float, bytes], None] | None = None
    ) -> None:
        """``on_body(arrived_at, body)`` sees every request's body (a receiver for another
        sender, e.g. Alertmanager, which sends no idempotency key and no signature)."""
        self.secret = secret
        self.on_body = on_body
        self._condition = threading.Condition()
        #: idempotency key -> time.time() of its first arrival
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        self.duplicates = 0
        self.bad_signatures = 0
        #: while True every request is answered 503 and not recorded (`bench soak`'s outage)
        self.failing = False
        self.refused = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        server = _Server((_LOCALHOST, 0), _Handler)
        server.receiver = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="bench-receiver",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("receiver is not running")
        return f"http://{_LOCALHOST}:{self._server.server_address[1]}/hook"

    def wait_for(self, keys: set[str], timeout: float) -> bool:
        """True once every key in ``keys`` has arrived; False after ``timeout`` seconds."""
        with self._condition:
            return self._condition.wait_for(lambda: keys <= self.arrivals.keys(), timeout)

    def arrived(self, keys: set[str]) -> int:
        with self._condition:
            return len(keys & self.arrivals.keys())

    def accepted_keys(self) -> dict[str, float]:
        """Every idempotency key accepted so far, with its first arrival."""
        with self._condition:
            return dict(self.arrivals)

    def _refuse(self) -> bool:
        with self._condition:
            if self.failing:
                self.refused += 1
            return self.failing

    def _record(self, key: str | None, at: float, signature_ok: bool) -> None:
        with self._condition:
            self.requests += 1
            if not signature_ok:
                self.bad_signatures += 1
            if key is None:
                return
            if key in self.arrivals:
                self.duplicates += 1
            else:
                self.arrivals[key] = at
            self._condition.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # a notifier opens up to its concurrency in connections at once
    request_queue_size = 128
    receiver: ArrivalReceiver


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # an idle keep-alive connection is closed after this long
    timeout = 30
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        at = time.time()
        receiver = self.server.receiver
        if receiver._refuse():
            self._reply(503, b"failing on purpose")
            return
        signature_ok = receiver.secret is None or verify_signature(
            receiver.secret, body, self.headers.get(SIGNATURE_HEADER)
        )
        receiver._record(self.headers.get(IDEMPOTENCY_HEADER), at, signature_ok)
        if receiver.on_body is not None:
            receiver.on_body(at, body)
        self._reply(200, b"ok")

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
