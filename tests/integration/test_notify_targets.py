"""The connect-time guard for real: a loopback HTTP(S) server, the guarded client, the notifier.

Names resolve through injected resolvers (a name can be made to resolve to 169.254.169.254, or
to change its answer, without touching /etc/hosts); addresses are real sockets.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from rtmh.notify.channels import parse_channel
from rtmh.notify.notifier import NotifierOptions, NotifierThread
from rtmh.notify.outbound import send_test
from rtmh.notify.targets import TargetPolicy, TargetRefused, check_url, guarded_client
from tests.receivers import ALLOW_LOOPBACK, HttpReceiver

from .test_notifier import add_channel, notification_rows, queue_one, row_in, wait_until

STRICT = TargetPolicy()
LOOPBACK = TargetPolicy.parse([ALLOW_LOOPBACK])
#: a public address; never connected to by these tests (the second answer is refused first)
PUBLIC = "93.184.215.14"


def resolving(answers: dict[str, list[str]]) -> Callable[[str], Iterable[str]]:
    def resolve(host: str) -> list[str]:
        return answers[host]

    return resolve


class Rebinding:
    """A resolver whose answer changes: the first lookup gets ``first``, every later one
    ``then`` (what a DNS-rebinding attacker's name server does, with a TTL of 0)."""

    def __init__(self, first: list[str], then: list[str]) -> None:
        self.answers = [first, then]
        self.lookups: list[str] = []

    def __call__(self, host: str) -> list[str]:
        self.lookups.append(host)
        return self.answers[min(len(self.lookups), 2) - 1]


def request(
    url: str,
    policy: TargetPolicy,
    resolver: Callable[[str], Iterable[str]] | None = None,
    *,
    verify: Any = True,
    follow_redirects: bool = False,
) -> httpx.Response:
    async def main() -> httpx.Response:
        async with guarded_client(policy, resolver=resolver, verify=verify, timeout=5) as client:
            return await client.get(url, follow_redirects=follow_redirects)

    return asyncio.run(main())


@pytest.fixture
def hook() -> Iterator[HttpReceiver]:
    with HttpReceiver() as receiver:
        yield receiver


# --- the guarded client ---------------------------------------------------------------------


def test_loopback_is_refused_by_default_and_reached_when_allowed(hook: HttpReceiver) -> None:
    with pytest.raises(TargetRefused) as caught:
        request(hook.url, STRICT)
    assert str(caught.value) == (
        "127.0.0.1 is a loopback address; add it to RTMH_ALLOWED_TARGETS to allow it"
    )
    assert hook.requests == []
    assert request(hook.url, LOOPBACK).status_code == 200
    assert len(hook.wait_for(1)) == 1


def test_a_name_resolving_to_loopback_is_refused_unless_the_name_or_address_is_allowed(
    hook: HttpReceiver,
) -> None:
    url = f"http://localhost:{hook.port}/hook"
    with pytest.raises(TargetRefused, match=r"^localhost resolves to (127\.0\.0\.1|::1), a loop"):
        request(url, STRICT)
    assert hook.requests == []
    assert request(url, TargetPolicy.parse(["localhost"])).status_code == 200
    [arrived] = hook.wait_for(1)
    assert arrived.header("Host") == f"localhost:{hook.port}"


def test_the_connection_goes_to_the_checked_address_not_to_a_new_lookup(
    hook: HttpReceiver,
) -> None:
    # hook.test exists for the injected resolver only: the request can only have arrived
    # through the address that resolver gave and the policy checked
    resolver = Rebinding(["127.0.0.1"], ["127.0.0.1"])
    response = request(f"http://hook.test:{hook.port}/hook", LOOPBACK, resolver)
    assert response.status_code == 200
    assert resolver.lookups == ["hook.test"]
    [arrived] = hook.wait_for(1)
    assert arrived.header("Host") == f"hook.test:{hook.port}"


def test_a_name_resolving_to_metadata_is_refused_whatever_the_allow_list_says(
    hook: HttpReceiver,
) -> None:
    generous = TargetPolicy.parse(["169.254.0.0/16", "metadata.test", ALLOW_LOOPBACK])
    resolver = resolving({"metadata.test": ["169.254.169.254"]})
    with pytest.raises(TargetRefused) as caught:
        request(f"http://metadata.test:{hook.port}/latest/meta-data/", generous, resolver)
    assert str(caught.value) == (
        "metadata.test resolves to 169.254.169.254, a link-local/metadata address; such "
        "addresses are never allowed, whatever RTMH_ALLOWED_TARGETS says"
    )
    mapped = resolving({"mapped.test": ["::ffff:169.254.169.254"]})
    with pytest.raises(TargetRefused, match=r"IPv4 169\.254\.169\.254 in IPv6 form"):
        request(f"http://mapped.test:{hook.port}/", generous, mapped)


def test_every_address_of_a_name_is_checked_not_only_the_first(hook: HttpReceiver) -> None:
    resolver = resolving({"mixed.test": ["127.0.0.1", "169.254.169.254"]})
    with pytest.raises(TargetRefused, match=r"mixed\.test resolves to 169\.254\.169\.254"):
        request(f"http://mixed.test:{hook.port}/hook", LOOPBACK, resolver)
    assert hook.requests == []


def test_a_rebinding_name_cannot_reach_loopback_after_passing_the_write_time_check(
    hook: HttpReceiver,
) -> None:
    rebinding = Rebinding([PUBLIC], ["127.0.0.1"])
    url = f"http://rebind.test:{hook.port}/hook"
    check_url(url, STRICT, resolver=rebinding)  # saved: it resolved to a public address
    with pytest.raises(TargetRefused, match=r"^rebind.test resolves to 127.0.0.1, a loopback"):
        request(url, STRICT, rebinding)
    assert rebinding.lookups == ["rebind.test", "rebind.test"]
    assert hook.requests == []


def test_a_redirect_to_a_refused_address_is_not_followed(hook: HttpReceiver) -> None:
    metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    hook.respond_with(302, body="", headers={"Location": metadata})
    response = request(hook.url, LOOPBACK)
    assert response.status_code == 302 and len(hook.requests) == 1
    # and one followed on purpose would still have to connect through the guard
    with pytest.raises(TargetRefused, match=r"^169.254.169.254 is a link-local/metadata"):
        request(hook.url, LOOPBACK, follow_redirects=True)
    channel = parse_channel("hook", "webhook", {"url": hook.url}, {})

    async def deliver_once() -> Any:
        return await send_test(channel, LOOPBACK, public_url="http://rtmh.test")

    result = asyncio.run(deliver_once())
    assert (result.ok, result.retryable, result.http_status) == (False, False, 302)
    assert len(hook.requests) == 3


def test_send_test_reports_a_refused_target_as_a_permanent_failure(hook: HttpReceiver) -> None:
    channel = parse_channel("hook", "webhook", {"url": hook.url}, {})
    refused = asyncio.run(send_test(channel, STRICT, public_url="http://rtmh.test"))
    assert not refused.ok and not refused.retryable and refused.http_status is None
    assert refused.error == (
        "refused: 127.0.0.1 is a loopback address; add it to RTMH_ALLOWED_TARGETS to allow it"
    )
    delivered = asyncio.run(send_test(channel, LOOPBACK, public_url="http://rtmh.test"))
    assert delivered.ok and hook.wait_for(1)[0].header("X-RTMH-Event") == "test"


# --- TLS: the certificate is still checked against the URL's host name ----------------------


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test CA")
    d = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=RTMH test CA", "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=hook.test",
             "-keyout", d / "server.key", "-out", d / "server.csr")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=DNS:hook.test\n")
    _openssl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem",
             "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", d / "ext.cnf", "-out", d / "server.pem")  # fmt: skip
    return d


@contextmanager
def https_server(certs: Path) -> Iterator[tuple[int, list[str | None]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for hook.test; yields its port and the
    SNI names its clients sent."""
    names: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")

    def remember(_sock: ssl.SSLObject, name: str, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = remember
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield int(server.server_address[1]), names
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_tls_verifies_the_certificate_against_the_url_host_not_the_address(
    certificates: Path,
) -> None:
    trust = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    resolver = resolving({"hook.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    with https_server(certificates) as (port, names):
        ok = request(f"https://hook.test:{port}/", LOOPBACK, resolver, verify=trust)
        assert ok.status_code == 200 and ok.text == "ok"
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            request(f"https://other.test:{port}/", LOOPBACK, resolver, verify=trust)
    assert names[:2] == ["hook.test", "other.test"]


# --- the notifier ---------------------------------------------------------------------------


def test_the_notifier_records_a_refused_target_as_dead_with_the_reason(
    db_url: str, hook: HttpReceiver
) -> None:
    add_channel(db_url, "local", "webhook", {"url": hook.url})
    add_channel(
        db_url, "imds", "webhook", {"url": "http://[::ffff:169.254.169.254]/latest/meta-data/"}
    )
    add_channel(db_url, "allowed", "webhook", {"url": hook.url_for("/allowed")})
    local, _ = queue_one(db_url, "local")
    imds, _ = queue_one(db_url, "imds")
    options = NotifierOptions(poll_cap_s=0.2, targets=STRICT)
    with NotifierThread(db_url, options) as running:
        wait_until(lambda: row_in(db_url, local, "dead") and row_in(db_url, imds, "dead"))
    assert running.error is None
    rows = notification_rows(db_url)
    assert rows[local]["attempts"] == 1 and rows[local]["http_status"] is None
    assert rows[local]["last_error"] == (
        "refused: 127.0.0.1 is a loopback address; add it to RTMH_ALLOWED_TARGETS to allow it"
    )
    assert rows[imds]["last_error"].startswith(
        "refused: ::ffff:a9fe:a9fe (IPv4 169.254.169.254 in IPv6 form) is a link-local/metadata"
    )
    assert hook.requests == []
    # the same notifier settings with loopback allowed deliver
    allowed, _ = queue_one(db_url, "allowed")
    options = NotifierOptions(poll_cap_s=0.2, targets=LOOPBACK)
    with NotifierThread(db_url, options):
        wait_until(lambda: row_in(db_url, allowed, "sent"), what="sent")
    assert [r.path for r in hook.requests] == ["/allowed"]
