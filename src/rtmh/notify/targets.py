"""Which network addresses a notification channel may reach (server-side request forgery guard).

Whoever may save a channel chooses a URL the notifier will POST to from inside the network it
runs in. Without a guard that is a way to reach what only the hub can reach: the cloud metadata
service (instance credentials), the database's HTTP admin port, anything on loopback. So:

* **The policy** (:class:`TargetPolicy`, built from ``RTMH_ALLOWED_TARGETS``) judges one
  address. Link-local, cloud metadata, unspecified, multicast and reserved addresses are
  always refused. Loopback, private (RFC 1918, shared 100.64/10, IPv6 ULA) and other
  special-purpose addresses are refused unless the allow-list names a network containing the
  address, or the URL's exact host name. Public addresses are allowed. An IPv6 address that
  carries an IPv4 one (``::ffff:a.b.c.d``, ``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4, Teredo)
  is judged as that IPv4 address: the packets end up there.
* **Write time** (:func:`check_url`, called when a channel is saved): only http(s), no
  credentials in the URL, and every address the host has (a name is resolved, with a timeout)
  must pass. This gives the person saving the channel an answer at once; it is not the guard.
* **Connect time** (:func:`guarded_client`), the guard: an ``httpx.AsyncClient`` whose
  connections resolve the host themselves, check every address, and connect to a checked
  address; nothing resolves the name a second time, so a name whose answer changes between
  the check and the connection (DNS rebinding) cannot reach a refused address. TLS still
  verifies the certificate against the URL's host name (SNI), and redirects are not followed
  (were one followed anyway, its connection would go through the same check). Environment
  proxies (``HTTPS_PROXY``...) are not used: through a proxy the proxy connects, not RTMH, and
  the check would be void. A refused connection raises :class:`TargetRefused`, which the
  channel layer records as a permanent failure: the notification is dead at once.

Email (SMTP) is out of scope: an SMTP server is named by host and port in the channel, and its
connection is made by aiosmtplib, not through this client.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import anyio
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host name -> its addresses (``getaddrinfo``'s by default); injectable so tests can make a
#: name resolve anywhere without touching /etc/hosts
Resolver = Callable[[str], Iterable[str]]

ENV_NAME: Final = "RTMH_ALLOWED_TARGETS"
#: how long a write-time check waits for a name to resolve
RESOLVE_TIMEOUT_S: Final = 3.0
SCHEMES: Final = ("http", "https")

_HOST_NAME: Final = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*"
)


class HasAllowList(Protocol):
    """What :meth:`TargetPolicy.from_settings` reads (``rtmh.config.Settings``; not imported, so
    that Settings may validate RTMH_ALLOWED_TARGETS with :meth:`TargetPolicy.parse`)."""

    @property
    def allowed_target_list(self) -> list[str]: ...


class TargetRefused(ValueError):
    """A URL or address a channel may not reach; the message says why and what to do.

    It names hosts and addresses, never a whole URL: a Slack URL's path is a credential.
    """

    def __init__(self, message: str, *, host: str | None = None, address: str | None = None):
        super().__init__(message)
        self.host = host
        self.address = address


@dataclass(frozen=True, slots=True)
class AddressKind:
    """A kind of non-public address, as a reason names it ("a loopback address")."""

    label: str
    #: refused whatever the allow-list says
    always: bool


def _nets(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


_METADATA = AddressKind("a link-local/metadata address", always=True)
_CLOUD_METADATA = AddressKind("a cloud metadata address", always=True)
_LINK_LOCAL = AddressKind("a link-local address", always=True)
_UNSPECIFIED = AddressKind("an unspecified ('this network') address", always=True)
_MULTICAST = AddressKind("a multicast address", always=True)
_RESERVED = AddressKind("a reserved or broadcast address", always=True)
_LOOPBACK = AddressKind("a loopback address", always=False)
_PRIVATE = AddressKind("a private address", always=False)
_SHARED = AddressKind("a private address (carrier-grade NAT shared space)", always=False)
_SPECIAL = AddressKind("a special-purpose address (not on the public internet)", always=False)

# First match wins, so the specific entries (metadata) come before the ranges holding them.
# Every IPv6 address outside 2000::/3 that no entry names is reserved (see _kind).
_TABLE: Final[tuple[tuple[AddressKind, tuple[IPNetwork, ...]], ...]] = (
    (_METADATA, _nets("169.254.169.254/32")),
    # AWS's IPv6 instance metadata; Alibaba Cloud's metadata service
    (_CLOUD_METADATA, _nets("fd00:ec2::254/128", "100.100.100.200/32")),
    (_LINK_LOCAL, _nets("169.254.0.0/16", "fe80::/10")),
    (_UNSPECIFIED, _nets("0.0.0.0/8", "::/128")),
    (_MULTICAST, _nets("224.0.0.0/4", "ff00::/8")),
    (_RESERVED, _nets("240.0.0.0/4", "100::/64")),
    (_LOOPBACK, _nets("127.0.0.0/8", "::1/128")),
    (_PRIVATE, _nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    (_SHARED, _nets("100.64.0.0/10")),
    (
        _SPECIAL,
        _nets(
            "192.0.0.0/24",  # IETF protocol assignments
            "192.0.2.0/24",  # documentation
            "198.18.0.0/15",  # benchmarking; also what "fake-IP" DNS proxies answer
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/32",  # documentation
            "3fff::/20",
            "64:ff9b:1::/48",  # local NAT64: where the IPv4 address sits is the site's choice
        ),
    ),
)
_GLOBAL_UNICAST_V6: Final = ipaddress.ip_network("2000::/3")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def carried_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4, Teredo)."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # not :: nor ::1
        return ipaddress.IPv4Address(address.packed[-4:])
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[-4:])
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address, where the relay delivers
    return None


def _kind(address: IPAddress) -> AddressKind | None:
    for kind, networks in _TABLE:
        if any(address in net for net in networks if net.version == address.version):
            return kind
    if isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return _RESERVED
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy says about one address (``kind`` None: a public address)."""

    address: IPAddress
    #: the IPv4 address judged in its place (IPv4-mapped and the like)
    carried: ipaddress.IPv4Address | None
    kind: AddressKind | None
    allowed: bool

    def reason(self, host: str | None = None) -> str:
        """Why it is refused, and what to do about it: one sentence for a person."""
        if self.kind is None:
            return f"{self.address} is a public address"
        shown = str(self.address)
        if self.carried is not None:
            shown += f" (IPv4 {self.carried} in IPv6 form)"
        subject = f"{shown} is" if host is None else f"{host} resolves to {shown},"
        text = f"{subject} {self.kind.label}"
        if self.kind.always:
            return f"{text}; such addresses are never allowed, whatever {ENV_NAME} says"
        target = str(self.carried or self.address)
        if host is None:
            what = "it" if self.carried is None else target
        else:
            what = f"{host} (or {target})"
        return f"{text}; add {what} to {ENV_NAME} to allow it"


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Where channels may connect: refused kinds of addresses, minus what the allow-list names.

    Pure: no I/O. The default (empty allow-list) is the strict one.
    """

    networks: tuple[IPNetwork, ...] = ()
    #: lower-case, without a trailing dot, IDNA-encoded (as the URL's host is at connect time)
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TargetPolicy:
        """From allow-list entries: CIDR networks (a bare address is its /32 or /128) or host
        names. Raises ValueError naming the first entry that is neither."""
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = normalise_host(entry)
            if name is None or not _HOST_NAME.fullmatch(name):
                raise ValueError(
                    f"{ENV_NAME}: {entry!r} is neither a network (CIDR, e.g. 10.0.0.0/8) nor a "
                    "host name (wildcards are not supported)"
                )
            hosts.add(name)
        return cls(tuple(networks), frozenset(hosts))

    @classmethod
    def from_settings(cls, settings: HasAllowList) -> TargetPolicy:
        """From ``RTMH_ALLOWED_TARGETS`` (comma-separated)."""
        return cls.parse(settings.allowed_target_list)

    def judge(self, address: IPAddress | str, host: str | None = None) -> Verdict:
        """The verdict on ``address``, reached through the URL host ``host`` (None: a literal)."""
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        carried = carried_ipv4(ip)
        kind = _kind(carried or ip)
        if kind is None:
            return Verdict(ip, carried, None, True)
        if kind.always:
            return Verdict(ip, carried, kind, False)
        named = host is not None and normalise_host(host) in self.hosts
        listed = any(a in net for a in (ip, carried) if a is not None for net in self._nets(a))
        return Verdict(ip, carried, kind, named or listed)

    def check(self, address: IPAddress | str, host: str | None = None) -> None:
        """Raise :class:`TargetRefused` unless ``address`` may be reached (through ``host``)."""
        verdict = self.judge(address, host)
        if not verdict.allowed:
            raise TargetRefused(verdict.reason(host), host=host, address=str(verdict.address))

    def _nets(self, address: IPAddress) -> Iterable[IPNetwork]:
        return (net for net in self.networks if net.version == address.version)


def extend_allow_list(current: Iterable[str], *entries: str) -> str:
    """The ``RTMH_ALLOWED_TARGETS`` value that allows ``current`` and ``entries`` (for a
    process that embeds a loopback receiver: the demo, the benchmarks)."""
    return ",".join(dict.fromkeys([*current, *entries]))


def normalise_host(host: str) -> str | None:
    """A host as compared with allow-list names: httpx's (IDNA) form, lower-case, no final dot."""
    try:
        raw = httpx.URL(scheme="http", host=host.strip().rstrip(".")).raw_host
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None
    return raw.decode("ascii").lower() or None


def system_resolver(host: str) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (what a plain connection would try)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _addresses(host: str, answer: Iterable[str]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for text in answer:
        ip = ipaddress.ip_address(text)
        if ip not in found:
            found.append(ip)
    if not found:
        raise OSError(f"{host} has no address")
    return found


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------------
# Write time
# ------------------------------------------------------------------------------------------------


def check_url(
    url: str,
    policy: TargetPolicy,
    *,
    resolver: Resolver | None = None,
    timeout: float = RESOLVE_TIMEOUT_S,
) -> None:
    """Refuse ``url`` as a channel target (raises :class:`TargetRefused`) when it is not
    http(s), carries credentials, or its host is, or resolves to, a refused address.

    Blocks for at most ``timeout`` seconds while a name resolves (call it from a worker thread
    in async code). Passing is no promise: the connection is checked again when it is made.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise TargetRefused(
            "the URL cannot be parsed; give a full http:// or https:// URL"
        ) from None
    if parsed.scheme not in SCHEMES:
        shown = f" (not {parsed.scheme}://)" if parsed.scheme else ""
        raise TargetRefused(f"only http:// and https:// URLs can be targets{shown}")
    if parsed.userinfo:
        raise TargetRefused(
            "the URL carries credentials (user:password@); remove them and send credentials "
            "as a header (secrets.headers, e.g. Authorization)"
        )
    host = parsed.raw_host.decode("ascii")
    if not host:
        raise TargetRefused("the URL has no host")
    literal = _literal(host)
    if literal is not None:
        policy.check(literal)
        return
    try:
        addresses = _addresses(host, _resolve_within(resolver or system_resolver, host, timeout))
    except TimeoutError:
        raise TargetRefused(
            f"{host} did not resolve within {timeout:g}s; check the host name and DNS",
            host=host,
        ) from None
    except (OSError, ValueError) as err:
        raise TargetRefused(
            f"{host} cannot be resolved ({err}); check the host name", host=host
        ) from None
    for address in addresses:
        policy.check(address, host)


def _resolve_within(resolver: Resolver, host: str, timeout: float) -> list[str]:
    # getaddrinfo has no timeout of its own: it runs on a daemon thread that is left behind
    # when it hangs, so a dead DNS server cannot hold the caller (an API request) for minutes.
    outcome: list[list[str] | BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append(list(resolver(host)))
        except BaseException as err:  # handed to the caller as is
            outcome.append(err)
        finally:
            done.set()

    threading.Thread(target=run, name="rtmh-resolve", daemon=True).start()
    if not done.wait(timeout):
        raise TimeoutError(host)
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


# ------------------------------------------------------------------------------------------------
# Connect time
# ------------------------------------------------------------------------------------------------


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy in front of every TCP connection."""

    def __init__(
        self,
        policy: TargetPolicy,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolver = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        literal = _literal(host)
        if literal is not None:
            addresses = [literal]
            self.policy.check(literal)
        else:
            addresses = await self._resolve(host, timeout)
            # every address, not only the first: any of them may be the one connected to
            for address in addresses:
                self.policy.check(address, host)
        error: Exception | None = None
        for address in addresses:
            try:
                # an address, never the name: nothing resolves it again after the check
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as err:
                error = err
        assert error is not None
        raise error

    async def _resolve(self, host: str, timeout: float | None) -> list[IPAddress]:
        try:
            with anyio.fail_after(timeout):
                answer = await anyio.to_thread.run_sync(
                    lambda: list(self._resolver(host)), abandon_on_cancel=True
                )
            return _addresses(host, answer)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout}s") from None
        except (OSError, ValueError) as err:
            raise httpcore.ConnectError(f"cannot resolve {host}: {err}") from None

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("Unix sockets are never notification targets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a pool whose connections go through :class:`GuardedBackend`."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        resolver: Resolver | None = None,
        verify: Any = True,
        limits: httpx.Limits | None = None,
        backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        limits = limits or httpx.Limits()
        # trust_env here only reads SSL_CERT_FILE / SSL_CERT_DIR (a private CA for receivers)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=True)
        super().__init__(verify=ssl_context, limits=limits)
        # httpx's transport cannot be handed a network backend, so its pool is replaced by an
        # equal one that has it; the pool is the transport's only state (checked below).
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            raise RuntimeError("this httpx version keeps no _pool: the guard cannot be fitted")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy, resolver, backend),
        )


_UNGUARDING: Final = frozenset({"transport", "mounts", "proxy", "app", "trust_env"})


def guarded_client(
    policy: TargetPolicy,
    *,
    resolver: Resolver | None = None,
    verify: Any = True,
    limits: httpx.Limits | None = None,
    **client_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` that can only connect where ``policy`` allows.

    ``verify``: as httpx's (an ``ssl.SSLContext`` for a private CA); ``client_kwargs`` go to
    the client, except those that would route around the guard (transport, mounts, proxy)
    and ``follow_redirects``, which is always off.
    """
    unguarding = _UNGUARDING.intersection(client_kwargs)
    if unguarding or client_kwargs.get("follow_redirects"):
        raise TypeError(f"guarded_client does not take {sorted(unguarding) or 'redirects'}")
    client_kwargs.pop("follow_redirects", None)
    transport = GuardedTransport(policy, resolver=resolver, verify=verify, limits=limits)
    return httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False, **client_kwargs
    )
