"""Real local receivers for notification tests: an HTTP endpoint and an SMTP server.

Both listen on a free port of 127.0.0.1 (a real socket, served from a background thread), so
they work from plain synchronous pytest tests, from async code, and for code under test that
runs in another process (``rtmh notifier`` started as a subprocess posts to ``receiver.url``).

    with HttpReceiver(secret="s3cret") as hook:
        hook.fail_next(2, status=503)          # then answer normally
        ... deliver to hook.url ...
        [request] = hook.wait_for(1)
        assert request.signature_valid

    with SmtpReceiver() as smtp:
        ... send to smtp.host:smtp.port ...
        [mail] = smtp.wait_for(1)

The HMAC check here is written independently of ``rtmh.notify`` on purpose: a receiver that
reused the code under test would agree with any bug in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

_LOCALHOST = "127.0.0.1"
#: the RTMH_ALLOWED_TARGETS entry a notifier needs to reach these receivers: loopback is a
#: target it refuses by default
ALLOW_LOOPBACK = f"{_LOCALHOST}/32"


class _DropLoginDataNotice(logging.Filter):
    # aiosmtpd 1.4 logs "Session.login_data is deprecated" from its own AUTH code on every
    # successful login; nothing a caller can change, so it is dropped rather than shown.
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_NOTICE_FILTER = _DropLoginDataNotice()


def _wait(condition: threading.Condition, ready: Callable[[], bool], timeout: float) -> bool:
    with condition:
        return condition.wait_for(ready, timeout)


# ------------------------------------------------------------------------------------------------
# HTTP
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived."""

    method: str
    path: str
    #: header names lower-cased
    headers: Mapping[str, str]
    body: bytes
    #: HMAC check of X-RTMH-Signature; None when the receiver has no secret
    signature_valid: bool | None
    received_at: float

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class _Reply:
    kind: Literal["respond", "hang"]
    status: int = 200
    body: bytes = b"ok"
    headers: Mapping[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class HttpReceiver:
    """A recording HTTP server. Every method is thread-safe."""

    def __init__(self, *, secret: str | bytes | None = None, host: str = _LOCALHOST) -> None:
        self._secret = secret.encode() if isinstance(secret, str) else secret
        self._host = host
        self._condition = threading.Condition()
        self._requests: list[ReceivedRequest] = []
        self._plan: deque[_Reply] = deque()
        self._default = _Reply("respond")
        # Set on close: wakes hanging handlers so shutdown never waits for them.
        self._closing = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        server = _Server((self._host, 0), _Handler)
        server.receiver = self
        self._server = server
        # A short poll interval: shutdown() waits for the loop's next poll, once per test.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="http-receiver"
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is None:
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads (daemon_threads is off)
        if self._thread is not None:
            self._thread.join()
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

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """Where to point a webhook channel (any path is accepted; this one is /hook)."""
        return self.url_for("/hook")

    def url_for(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- behaviour ---------------------------------------------------------------------------

    def respond_with(
        self, status: int = 200, body: str | bytes = b"ok", headers: Mapping[str, str] | None = None
    ) -> None:
        """The answer to every request not covered by fail_next/hang_next."""
        with self._condition:
            self._default = _Reply("respond", status, _bytes(body), dict(headers or {}))

    def fail_next(
        self,
        n: int,
        status: int = 503,
        body: str | bytes = b"unavailable",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` (queued after earlier plans)."""
        reply = _Reply("respond", status, _bytes(body), dict(headers or {}))
        with self._condition:
            self._plan.extend([reply] * n)

    def hang_next(self, n: int = 1, seconds: float = 30.0) -> None:
        """Hold the next ``n`` requests without answering for ``seconds`` (or until close)."""
        with self._condition:
            self._plan.extend([_Reply("hang", seconds=seconds)] * n)

    # -- observation -------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._condition:
            return list(self._requests)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived; TimeoutError otherwise."""
        if not _wait(self._condition, lambda: len(self._requests) >= count, timeout):
            raise TimeoutError(f"expected {count} requests, got {len(self.requests)}")
        return self.requests

    def clear(self) -> None:
        with self._condition:
            self._requests.clear()
            self._plan.clear()

    # -- called by the handler thread --------------------------------------------------------

    def _record(self, request: ReceivedRequest) -> _Reply:
        with self._condition:
            self._requests.append(request)
            self._condition.notify_all()
            return self._plan.popleft() if self._plan else self._default

    def _check_signature(self, body: bytes, header: str | None) -> bool | None:
        if self._secret is None:
            return None
        expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        return header is not None and hmac.compare_digest(expected.encode(), header.encode())


class _Server(ThreadingHTTPServer):
    # Joined on server_close, so a test never ends with a handler still writing.
    daemon_threads = False
    receiver: HttpReceiver


class _Handler(BaseHTTPRequestHandler):
    # A client that connects and sends nothing must not keep close() waiting forever.
    timeout = 10
    server: _Server

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def _handle(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = ReceivedRequest(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            signature_valid=receiver._check_signature(body, headers.get("x-rtmh-signature")),
            received_at=time.time(),
        )
        reply = receiver._record(request)
        if reply.kind == "hang":
            receiver._closing.wait(reply.seconds)
            reply = _Reply("respond", 504, b"hung")
        # The client may have given up (that is what hang_next is for): nothing to report.
        with contextlib.suppress(OSError):
            self._respond(reply)

    def _respond(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", reply.headers.get("Content-Type", "text/plain"))
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; the requests are recorded instead


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


# ------------------------------------------------------------------------------------------------
# SMTP
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message accepted by the SMTP receiver."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    #: the login the client authenticated as, None without AUTH
    login: str | None

    @property
    def message(self) -> EmailMessage:
        return BytesParser(policy=policy.default).parsebytes(self.data)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: Literal["plain", "html"]) -> str | None:
        """The text of the text/<subtype> part, None when there is none."""
        body = self.message.get_body(preferencelist=(subtype,))
        return None if body is None else str(body.get_content())


class SmtpReceiver:
    """A recording SMTP server (aiosmtpd) on a free port of 127.0.0.1.

    ``auth=(login, password)`` offers AUTH PLAIN/LOGIN without TLS (test only) and accepts only
    that pair; without it, AUTH is not offered.
    """

    def __init__(self, *, auth: tuple[str, str] | None = None, host: str = _LOCALHOST) -> None:
        self.host = host
        self._auth = auth
        self._condition = threading.Condition()
        self._messages: list[ReceivedMail] = []
        self._failures: deque[tuple[int, str]] = deque()
        self._refused: dict[str, tuple[int, str]] = {}
        self._controller: _FreePortController | None = None

    def start(self) -> Self:
        logging.getLogger("mail.log").addFilter(_AIOSMTPD_NOTICE_FILTER)  # idempotent
        kwargs: dict[str, Any] = {"server_hostname": "rtmh-test-smtp"}
        if self._auth is not None:
            kwargs.update(authenticator=self._authenticate, auth_require_tls=False)
        self._controller = _FreePortController(_SmtpHandler(self), hostname=self.host, **kwargs)
        self._controller.start()
        return self

    def close(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

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
    def port(self) -> int:
        if self._controller is None:
            raise RuntimeError("receiver is not running")
        return int(self._controller.port)

    def fail_next(self, n: int, code: int = 451, message: str = "try again later") -> None:
        """Refuse the next ``n`` messages at DATA with ``code`` (4xx transient, 5xx permanent)."""
        with self._condition:
            self._failures.extend([(code, message)] * n)

    def refuse_recipient(
        self, address: str, code: int = 550, message: str = "no such user"
    ) -> None:
        """Refuse ``address`` at RCPT TO for every message from now on."""
        with self._condition:
            self._refused[address] = (code, message)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._condition:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMail]:
        """Block until at least ``count`` messages arrived; TimeoutError otherwise."""
        if not _wait(self._condition, lambda: len(self._messages) >= count, timeout):
            raise TimeoutError(f"expected {count} messages, got {len(self.messages)}")
        return self.messages

    # -- called from the aiosmtpd thread -----------------------------------------------------

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert self._auth is not None
        if isinstance(data, LoginPassword):
            login, password = data.login.decode(), data.password.decode()
            if (login, password) == self._auth:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _refusal(self, address: str) -> tuple[int, str] | None:
        with self._condition:
            return self._refused.get(address)

    def _accept(self, envelope: Envelope, session: Session) -> tuple[int, str] | None:
        with self._condition:
            if self._failures:
                return self._failures.popleft()
            login = session.auth_data if session.authenticated else None
            self._messages.append(
                ReceivedMail(
                    mail_from=str(envelope.mail_from),
                    rcpt_tos=tuple(envelope.rcpt_tos),
                    data=bytes(envelope.original_content or b""),
                    login=None if login is None else str(login),
                )
            )
            self._condition.notify_all()
            return None


class _SmtpHandler:
    """aiosmtpd handler hooks, delegating to the receiver."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self._receiver = receiver

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._receiver._refusal(address)
        if refusal is not None:
            return f"{refusal[0]} {refusal[1]}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        failure = self._receiver._accept(envelope, session)
        if failure is not None:
            return f"{failure[0]} {failure[1]}"
        return "250 Message accepted for delivery"


class _FreePortController(Controller):
    """aiosmtpd's Controller, bound to port 0 and told the port the kernel chose.

    Picking a "free" port first and binding it later races with other tests; binding port 0
    cannot collide.
    """

    def _create_server(self) -> Any:
        return self._bind()

    async def _bind(self) -> Any:
        server = await self.loop.create_server(
            self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
        )
        self.port = server.sockets[0].getsockname()[1]
        return server
