"""Serving the app with uvicorn: `rtmh api` alone, or as a supervised child of `rtmh up`.

The socket is bound here, before uvicorn starts, so that port 0 works (the kernel picks) and the
line announcing the URL names the real port: `rtmh up` and the tests wait for that line.
"""

from __future__ import annotations

import logging
import socket

import uvicorn

from rtmh.api.app import create_app
from rtmh.config import Settings

log = logging.getLogger(__name__)

READY_LINE = "API listening on"


class PortBusy(Exception):
    """The address cannot be bound; one line saying what to do."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only when
    # the listening socket says it is TCP; without it every response's body waited for the
    # client's delayed ACK (~40 ms a request, measured by `rtmh bench api`)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise PortBusy(
            f"cannot listen on {host}:{port} ({err.strerror}): another program has it; "
            "choose another with --port or RTMH_API_PORT (0 = any free port)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(settings: Settings, postgres_url: str, host: str, port: int) -> None:
    """Run until SIGINT/SIGTERM (uvicorn handles them and drains open requests)."""
    sock = bind(host, port)
    app = create_app(settings, postgres_url)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # stderr, like every RTMH log line: `up` keeps it in logs/api.log and tests read it there
    log.info("%s %s (docs at %s/docs)", READY_LINE, url_of(sock), url_of(sock))
    server.run(sockets=[sock])
