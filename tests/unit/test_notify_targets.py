"""The target policy and the write-time URL check (no network: names resolve through a stub)."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtmh.config import Settings
from rtmh.notify.channels import ChannelConfigError, parse_channel
from rtmh.notify.outbound import channel_urls, check_channel
from rtmh.notify.targets import (
    TargetPolicy,
    TargetRefused,
    carried_ipv4,
    check_url,
    extend_allow_list,
    guarded_client,
)

STRICT = TargetPolicy()
#: every allowable kind of address allowed, and then some
EVERYTHING = TargetPolicy.parse(["0.0.0.0/0", "::/0"])

ALWAYS_REFUSED = [
    "169.254.169.254",
    "169.254.0.1",
    "169.254.170.2",
    "fe80::1",
    "fe80::1%eth0",
    "fd00:ec2::254",
    "100.100.100.200",
    "0.0.0.0",
    "0.1.2.3",
    "::",
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "240.0.0.1",
    "255.255.255.255",
    "100::1",
    "fec0::1",
    "::ffff:169.254.169.254",
    "::169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
    "::ffff:0.0.0.0",
]
ALLOWABLE = [
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "fc00::1",
    "fd12:3456::1",
    "192.0.2.10",
    "198.18.0.1",
    "2001:db8::1",
    "64:ff9b:1::1",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "64:ff9b::7f00:1",
    "::127.0.0.1",
    "2002:c0a8:101::1",
]
PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.215.14",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001::1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


def stub(answers: dict[str, list[str]]) -> Callable[[str], Iterable[str]]:
    def resolve(host: str) -> list[str]:
        if host not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return answers[host]

    return resolve


# --- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ALWAYS_REFUSED)
def test_link_local_metadata_unspecified_multicast_reserved_are_refused_whatever_is_allowed(
    address: str,
) -> None:
    for policy in (STRICT, EVERYTHING, TargetPolicy.parse([address.split("%")[0]])):
        verdict = policy.judge(address)
        assert not verdict.allowed and verdict.kind is not None and verdict.kind.always
        assert "never allowed" in verdict.reason()


@pytest.mark.parametrize("address", ALLOWABLE)
def test_loopback_private_and_special_are_refused_unless_allowed(address: str) -> None:
    assert not STRICT.judge(address).allowed
    assert "RTMH_ALLOWED_TARGETS to allow it" in STRICT.judge(address).reason()
    assert EVERYTHING.judge(address).allowed
    judged = carried_ipv4(ipaddress.ip_address(address)) or ipaddress.ip_address(address)
    assert TargetPolicy.parse([str(judged)]).judge(address).allowed


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert STRICT.judge(address).allowed
    assert STRICT.judge(address).kind is None


def test_an_allow_list_network_allows_what_it_contains_and_nothing_else() -> None:
    policy = TargetPolicy.parse([" 10.20.0.0/16 ", "", "fd00:1::/32"])
    assert policy.judge("10.20.3.4").allowed
    assert policy.judge("::ffff:10.20.3.4").allowed  # the IPv4 it carries is in the network
    assert not policy.judge("10.21.0.1").allowed
    assert policy.judge("fd00:1::5").allowed
    assert not policy.judge("fd00:2::5").allowed
    assert not policy.judge("127.0.0.1").allowed


def test_an_allow_list_host_name_allows_that_exact_host_only() -> None:
    policy = TargetPolicy.parse(["Hooks.Internal."])
    assert policy.judge("10.0.0.5", "hooks.internal").allowed
    assert policy.judge("10.0.0.5", "HOOKS.internal.").allowed
    assert not policy.judge("10.0.0.5", "other.internal").allowed
    assert not policy.judge("10.0.0.5", "x.hooks.internal").allowed
    assert not policy.judge("10.0.0.5").allowed  # a literal address is not the name
    # a name never opens the always-refused kinds
    assert not policy.judge("169.254.169.254", "hooks.internal").allowed


def test_allow_list_entries_are_networks_or_host_names() -> None:
    policy = TargetPolicy.parse(["127.0.0.1", "[::1]", "192.168.1.7/24", "bücher.example"])
    assert [str(n) for n in policy.networks] == ["127.0.0.1/32", "::1/128", "192.168.1.0/24"]
    assert policy.hosts == {"xn--bcher-kva.example"}
    for bad in ("10.0.0.0/33", "*.internal", "http://hooks.internal", "a b"):
        with pytest.raises(ValueError, match=r"RTMH_ALLOWED_TARGETS: .* is neither a network"):
            TargetPolicy.parse([bad])


def test_policy_from_settings_reads_the_comma_separated_list() -> None:
    settings = Settings(allowed_targets="127.0.0.1/32, hooks.internal")
    policy = TargetPolicy.from_settings(settings)
    assert policy.judge("127.0.0.1").allowed and policy.judge("10.0.0.1", "hooks.internal").allowed
    assert TargetPolicy.from_settings(Settings(allowed_targets="")) == STRICT
    assert extend_allow_list(["hooks.internal", "127.0.0.1/32"], "127.0.0.1/32") == (
        "hooks.internal,127.0.0.1/32"
    )


def test_reasons_say_what_is_wrong_and_what_to_do() -> None:
    assert STRICT.judge("127.0.0.1").reason() == (
        "127.0.0.1 is a loopback address; add it to RTMH_ALLOWED_TARGETS to allow it"
    )
    assert STRICT.judge("127.0.0.1").reason("localhost") == (
        "localhost resolves to 127.0.0.1, a loopback address; add localhost (or 127.0.0.1) "
        "to RTMH_ALLOWED_TARGETS to allow it"
    )
    assert STRICT.judge("169.254.169.254").reason("evil.test") == (
        "evil.test resolves to 169.254.169.254, a link-local/metadata address; such addresses "
        "are never allowed, whatever RTMH_ALLOWED_TARGETS says"
    )
    mapped = STRICT.judge("::ffff:127.0.0.1").reason()
    assert "(IPv4 127.0.0.1 in IPv6 form) is a loopback address; add 127.0.0.1 to" in mapped


ipv4s = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
ipv6s = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@given(ipv4s)
def test_every_ipv6_form_of_an_ipv4_address_gets_its_verdict(v4: ipaddress.IPv4Address) -> None:
    forms = [
        ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + v4.packed),  # ::ffff:a.b.c.d
        ipaddress.IPv6Address(bytes.fromhex("0064ff9b") + b"\0" * 8 + v4.packed),  # NAT64
        ipaddress.IPv6Address(bytes.fromhex("2002") + v4.packed + b"\0" * 10),  # 6to4
    ]
    if int(v4) > 1:  # ::0.0.0.0 and ::0.0.0.1 are :: and ::1, not IPv4-compatible forms
        forms.append(ipaddress.IPv6Address(b"\0" * 12 + v4.packed))
    for policy in (STRICT, TargetPolicy.parse([f"{v4}/32"])):
        expected = policy.judge(v4).allowed
        assert [policy.judge(form).allowed for form in forms] == [expected] * len(forms)


@given(st.one_of(ipv4s, ipv6s))
def test_allowed_by_default_means_public(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    verdict = STRICT.judge(address)
    judged = carried_ipv4(address) or address
    if verdict.allowed:
        assert judged.is_global and not judged.is_multicast
    if not judged.is_global or judged.is_multicast or judged.is_link_local:
        assert not verdict.allowed


@given(st.integers(0, 2**16 - 1))
def test_no_allow_list_reaches_link_local(low: int) -> None:
    address = ipaddress.IPv4Address(int(ipaddress.IPv4Address("169.254.0.0")) + low)
    assert not EVERYTHING.judge(address).allowed
    assert not TargetPolicy.parse(["169.254.0.0/16"]).judge(address, "named.test").allowed


# --- check_url ------------------------------------------------------------------------------


def test_check_url_refuses_schemes_credentials_and_hostless_urls() -> None:
    cases = {
        "ftp://files.example.com/x": "only http:// and https:// URLs can be targets (not ftp://)",
        "file:///etc/passwd": "only http:// and https:// URLs",
        "gopher://127.0.0.1:6379/_INFO": "only http:// and https:// URLs",
        "https://user:pw@hooks.example.com/x": "the URL carries credentials",
        "http:///path": "the URL has no host",
    }
    for url, message in cases.items():
        with pytest.raises(TargetRefused) as caught:
            check_url(url, EVERYTHING, resolver=stub({}))
        assert message in str(caught.value)
        assert "pw" not in str(caught.value)


def test_check_url_refuses_literal_addresses_with_the_policys_reason() -> None:
    with pytest.raises(TargetRefused) as caught:
        check_url("http://127.0.0.1:8080/hook", STRICT)
    assert str(caught.value) == (
        "127.0.0.1 is a loopback address; add it to RTMH_ALLOWED_TARGETS to allow it"
    )
    assert isinstance(caught.value, ValueError) and caught.value.address == "127.0.0.1"
    for url in (
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[::ffff:127.0.0.1]:80/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://[fe80::1%25eth0]/",
    ):
        with pytest.raises(TargetRefused):
            check_url(url, STRICT, resolver=stub({}))
    check_url("http://127.0.0.1:8080/hook", TargetPolicy.parse(["127.0.0.0/8"]))
    check_url("https://8.8.8.8/hook", STRICT)


def test_check_url_resolves_names_and_refuses_when_any_address_is_refused() -> None:
    resolver = stub(
        {
            "hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
            "mixed.example.com": ["93.184.215.14", "10.0.0.7"],
            "metadata.example.com": ["169.254.169.254"],
            "intranet.example.com": ["10.0.0.7"],
        }
    )
    check_url("https://hooks.example.com/x", STRICT, resolver=resolver)
    with pytest.raises(TargetRefused, match=r"mixed.example.com resolves to 10.0.0.7, a private"):
        check_url("https://mixed.example.com/x", STRICT, resolver=resolver)
    named = TargetPolicy.parse(["intranet.example.com", "metadata.example.com"])
    check_url("https://intranet.example.com/x", named, resolver=resolver)
    with pytest.raises(
        TargetRefused, match="link-local/metadata address; such addresses are never"
    ):
        check_url("https://metadata.example.com/x", named, resolver=resolver)


def test_check_url_resolves_localhost_for_real() -> None:
    with pytest.raises(TargetRefused, match=r"^localhost resolves to (127\.0\.0\.1|::1), a loop"):
        check_url("http://localhost:8080/", STRICT)
    check_url("http://localhost:8080/", TargetPolicy.parse(["localhost"]))


def test_check_url_refuses_a_name_that_does_not_resolve_or_takes_too_long() -> None:
    with pytest.raises(TargetRefused, match=r"^nowhere.test cannot be resolved \(.*\); check the"):
        check_url("https://nowhere.test/", STRICT, resolver=stub({}))
    release = threading.Event()

    def hanging(host: str) -> list[str]:
        release.wait(30)
        return ["93.184.215.14"]

    try:
        with pytest.raises(TargetRefused, match=r"^slow.test did not resolve within 0.05s"):
            check_url("https://slow.test/", STRICT, resolver=hanging, timeout=0.05)
    finally:
        release.set()


# --- channels at write time -----------------------------------------------------------------


def test_check_channel_names_the_field_and_never_the_secret_url() -> None:
    slack_url = "https://10.1.2.3/services/T000/B000/XXXXSECRETXXXX"
    slack = parse_channel("team", "slack", {}, {"url": slack_url})
    assert channel_urls(slack) == [("secrets.url", slack_url)]
    with pytest.raises(ChannelConfigError) as caught:
        check_channel(slack, STRICT, resolver=stub({}))
    message = str(caught.value)
    assert message.startswith("channel 'team': secrets.url: 10.1.2.3 is a private address")
    assert "SECRET" not in message and isinstance(caught.value.__cause__, TargetRefused)
    pd = parse_channel(
        "pd", "pagerduty", {"base_url": "http://127.0.0.1:9"}, {"routing_key": "k" * 32}
    )
    with pytest.raises(ChannelConfigError, match=r"config.base_url: 127.0.0.1 is a loopback"):
        check_channel(pd, STRICT)
    hook = parse_channel("hook", "webhook", {"url": "http://192.168.0.10/x"}, {})
    check_channel(hook, TargetPolicy.parse(["192.168.0.0/24"]))
    mail = parse_channel(
        "mail", "email", {"host": "127.0.0.1", "from_addr": "a@b.c", "to_addrs": ["d@e.f"]}, {}
    )
    assert channel_urls(mail) == []  # SMTP is out of the guard's scope


def test_guarded_client_refuses_options_that_would_route_around_it() -> None:
    unguarding: list[dict[str, Any]] = [
        {"proxy": "http://proxy:3128"},
        {"mounts": {}},
        {"follow_redirects": True},
    ]
    for kwargs in unguarding:
        with pytest.raises(TypeError):
            guarded_client(STRICT, **kwargs)
