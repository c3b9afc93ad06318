"""A TCP proxy in front of the embedded PostgreSQL that can lose one COMMIT reply.

Why it exists: the worst moment for a connection to break is after PostgreSQL committed a
checkpoint but before its client read the reply. The worker then cannot tell from the error
whether the batch committed; only what it finds on its retry says so. Killing the server or the
worker cannot produce that moment reliably; a proxy that sees the reply go by can: armed, it
swallows the next ``CommandComplete "COMMIT"`` and closes both sides of that connection, so the
transaction is durable in PostgreSQL and the client sees a dropped connection instead.

Everything else is forwarded byte for byte. The proxy follows the server's message framing (a
type byte and a length) to find that reply even when it is split across reads or shares a read
with other messages; it forwards whole messages only, so nothing of the swallowed one leaks. The
one-byte answers to an SSLRequest or GSSENCRequest (sent before the startup message, unframed)
are recognised by watching the client's first packets; were encryption accepted, the proxy
could no longer read the stream and just forwards it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import quote, urlencode

from psycopg.conninfo import conninfo_to_dict

#: the server's reply to a committed COMMIT: CommandComplete ('C', length 11, tag "COMMIT\0")
COMMIT_COMPLETE = b"C\x00\x00\x00\x0bCOMMIT\x00"
#: codes of the unframed requests the server answers with one byte ('N': no, 'S'/'G': yes)
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
RECV_BYTES = 65536


class _Link:
    """One proxied connection: the client's socket and the one to PostgreSQL."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        #: one entry per SSLRequest/GSSENCRequest forwarded and not answered yet
        self.answers_due: deque[int] = deque()
        #: the client's startup packets still being watched (until the startup message)
        self.in_startup = True
        self.startup_buf = bytearray()
        #: encryption was accepted: the stream can no longer be parsed, only forwarded
        self.opaque = False
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close both sockets; shutdown first, so the other pump's blocked recv() returns."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class PgProxy:
    """Listens on 127.0.0.1:<free port> and forwards each connection to ``db_url``'s server."""

    def __init__(self, db_url: str) -> None:
        info = conninfo_to_dict(db_url)
        host = str(info.get("host") or "localhost")
        port = int(info.get("port") or 5432)
        self._upstream_unix = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else None
        self._upstream_tcp = (host, port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = _url_via(info, self.port)
        #: set once an armed proxy has swallowed a COMMIT reply
        self.fired = threading.Event()
        #: COMMIT replies forwarded to clients (the swallowed one not counted)
        self.commits = 0
        self._armed = False
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._spawn(self._accept_loop, "pg-proxy-accept")

    # --- control ---------------------------------------------------------------------------------
    def arm_drop_after_commit(self) -> None:
        """Swallow the next COMMIT reply (from any connection) and close that connection."""
        with self._lock:
            self.fired.clear()
            self._armed = True

    def close(self) -> None:
        with self._lock:
            self._closing = True
            links = list(self._links)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for link in links:
            link.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(10)

    def __enter__(self) -> PgProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _connect_upstream(self) -> socket.socket:
        if self._upstream_unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(self._upstream_unix)
            return sock
        return socket.create_connection(self._upstream_tcp, timeout=10)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = self._connect_upstream()
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                if sock.family != socket.AF_UNIX:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(client, server)
            with self._lock:
                if self._closing:
                    link.close()
                    return
                self._links.append(link)
            self._spawn(self._pump_client, "pg-proxy-c2s", link)
            self._spawn(self._pump_server, "pg-proxy-s2c", link)

    def _pump_client(self, link: _Link) -> None:
        """Client -> PostgreSQL, unchanged; notes the requests answered with a single byte."""
        try:
            while data := link.client.recv(RECV_BYTES):
                if link.in_startup:
                    _watch_startup(link, data)
                link.server.sendall(data)
        except OSError:
            pass
        link.close()

    def _pump_server(self, link: _Link) -> None:
        """PostgreSQL -> client, whole messages at a time, swallowing the COMMIT when armed."""
        buf = bytearray()
        try:
            while data := link.server.recv(RECV_BYTES):
                if link.opaque:
                    link.client.sendall(data)
                    continue
                buf += data
                whole, drop = self._whole_messages(link, buf)
                if whole:
                    link.client.sendall(buf[:whole])
                    del buf[:whole]
                if drop:
                    break  # the COMMIT reply and whatever came with it after it go nowhere
        except OSError:
            pass
        link.close()

    def _whole_messages(self, link: _Link, buf: bytearray) -> tuple[int, bool]:
        """How many leading bytes of ``buf`` are complete messages to forward, and whether the
        message right after them is the COMMIT reply to swallow (the proxy then disarms)."""
        pos = 0
        while pos < len(buf):
            if link.answers_due:  # the unframed one-byte answer to SSLRequest/GSSENCRequest
                link.answers_due.popleft()
                if buf[pos] in b"SG":
                    link.opaque = True
                    return len(buf), False
                pos += 1
                continue
            if len(buf) - pos < 5:
                break
            end = pos + 1 + int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if end > len(buf):
                break
            if buf[pos:end] == COMMIT_COMPLETE:
                with self._lock:
                    if self._armed:
                        self._armed = False
                        self.fired.set()
                        return pos, True
                    self.commits += 1
            pos = end
        return pos, False


def _watch_startup(link: _Link, data: bytes) -> None:
    """Follow the client's unframed startup packets (length, code): each SSLRequest or
    GSSENCRequest gets a one-byte answer; the startup message (or anything else) ends them."""
    link.startup_buf += data
    buf = link.startup_buf
    while len(buf) >= 8:
        length = int.from_bytes(buf[0:4], "big")
        code = int.from_bytes(buf[4:8], "big")
        if code not in (SSL_REQUEST, GSSENC_REQUEST) or length != 8:
            link.in_startup = False
            buf.clear()
            return
        link.answers_due.append(code)  # before the request is forwarded: the answer follows it
        del buf[:8]


def _url_via(info: Mapping[str, object], port: int) -> str:
    """``info`` as a postgresql:// URL to 127.0.0.1:``port``, the rest (user, password, dbname,
    options) kept."""
    user = str(info.get("user") or "")
    password = str(info.get("password") or "")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    rest = {
        k: str(v)
        for k, v in info.items()
        if k not in ("host", "hostaddr", "port", "user", "password", "dbname") and v is not None
    }
    query = "?" + urlencode(rest) if rest else ""
    dbname = quote(str(info.get("dbname") or ""), safe="")
    return f"postgresql://{auth + '@' if auth else ''}127.0.0.1:{port}/{dbname}{query}"
