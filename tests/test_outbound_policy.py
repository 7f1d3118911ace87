"""The destination policy as plain function calls: which URLs and addresses we refuse, and why."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from call_state.outbound_policy import (
    MAX_ALLOWED_HOSTS,
    DestinationRefused,
    OutboundPolicy,
    address_refusal,
    parse_allowed_hosts,
)

PUBLIC = OutboundPolicy()
LOCAL_DEV = OutboundPolicy(frozenset({"127.0.0.1"}))


def refusal(policy: OutboundPolicy, url: object) -> str:
    with pytest.raises(DestinationRefused) as caught:
        policy.destination(url)
    return caught.value.reason


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://crm.example.com/hook", "http:// is only allowed for hosts in WEBHOOK_ALLOWED_HOSTS"),
        ("ftp://crm.example.com/", "must start with https://"),
        ("javascript:alert(1)", "must start with https://"),
        ("//crm.example.com/x", "must start with https://"),
        ("https://user:pw@crm.example.com/", "user name or password"),
        ("https://crm.example.com@127.0.0.1/", "user name or password"),
        ("https://crm.example.com\\@evil.example/", "backslashes"),
        ("https://10.0.0.5/", "private"),
        ("https://172.16.9.1/", "private"),
        ("https://192.168.1.1:8443/", "private"),
        ("https://169.254.169.254/latest/meta-data/", "link-local (cloud metadata"),
        ("https://127.0.0.1/", "loopback"),
        ("https://127.9.9.9/", "loopback"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://[::]/", "unspecified"),
        ("https://[::1]/", "loopback"),
        ("https://[0:0:0:0:0:0:0:1]/", "loopback"),
        ("https://100.64.1.1/", "CGNAT"),
        ("https://224.0.0.251/", "multicast"),
        ("https://[ff02::1]/", "multicast"),
        ("https://255.255.255.255/", "reserved"),
        ("https://240.0.0.1/", "reserved"),
        ("https://192.0.2.10/", "documentation"),
        ("https://[fd00:ec2::254]/", "unique local"),  # the EC2 metadata service over IPv6
        ("https://[fe80::1]/", "link-local"),
        ("https://[fe80::1%25eth0]/", "zone ids"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped loopback"),
        ("https://[::ffff:a9fe:a9fe]/", "IPv4-mapped link-local"),
        ("https://[64:ff9b::a9fe:a9fe]/", "NAT64 of link-local"),
        ("https://[64:ff9b::10.1.2.3]/", "NAT64 of private"),
        ("https://[64:ff9b:1::1]/", "local-use NAT64"),
        ("https://[::127.0.0.1]/", "IPv4-compatible"),
        ("https://[2002:7f00:1::1]/", "6to4"),
        ("https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "Teredo"),
        ("https://[4000::1]/", "not global unicast"),
        ("https://2130706433/", "numeric spelling"),
        ("https://0x7f.1/", "numeric spelling"),
        ("https://0X7F000001/", "numeric spelling"),
        ("https://017700000001/", "numeric spelling"),
        ("https://127.1/", "numeric spelling"),
        ("https://127.0.0.1./", "numeric spelling"),
        ("https://1.1.1.1.1/", "numeric spelling"),
        ("https://0177.0.0.1/", "not a valid URL"),
        # fullwidth digits and ideographic dots: IDNA would map them to 127.0.0.1
        ("https://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/", "printable ASCII"),
        ("https://bücher.example/", "printable ASCII"),
        ("https://crm.example.com\u202e/", "printable ASCII"),  # right-to-left override
        ("https://exa mple.com/", "printable ASCII"),
        ("https://crm.example.com/\x00", "printable ASCII"),
        ("https://ex%61mple.com/", "'%'"),
        ("https://a..b/", "not a valid host name"),
        ("https://-crm.example.com/", "not a valid host name"),
        ("https://" + "a" * 64 + ".com/", "not a valid host name"),
        ("https:///path", "has no host"),
        ("https://crm.example.com:0/", "port 0 is out of range"),
        ("https://crm.example.com:99999/", "port 99999 is out of range"),
        ("https://crm.example.com:8a/", "not a valid URL"),
        ("https://crm.example.com/" + "a" * 2048, "longer than 2048"),
        ("", "non-empty string"),
        (None, "non-empty string"),
        (["https://crm.example.com/"], "non-empty string"),
    ],
)
def test_refused_urls_say_why(url: object, reason: str) -> None:
    assert reason in refusal(PUBLIC, url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",  # listing 127.0.0.1 does not allow localhost...
        "http://127.1:8080/hook",  # ...nor another spelling of it...
        "http://2130706433:8080/hook",
        "http://[::1]:8080/hook",  # ...nor the other loopback
        "http://[::ffff:127.0.0.1]:8080/hook",
        "http://127.0.0.2:8080/hook",
    ],
)
def test_listing_a_host_allows_that_host_as_written_only(url: str) -> None:
    refusal(LOCAL_DEV, url)


def test_a_listed_host_may_use_http_and_a_private_address() -> None:
    destination = LOCAL_DEV.destination("http://127.0.0.1:8080/hook?token=t0ps3cret")
    assert (destination.scheme, destination.host, destination.port, destination.listed) == (
        "http",
        "127.0.0.1",
        8080,
        True,
    )
    assert destination.host_header == "127.0.0.1:8080"
    assert destination.for_log == "http://127.0.0.1:8080/hook"  # no query: people put tokens there


def test_accepted_public_urls() -> None:
    destination = PUBLIC.destination("HTTPS://CRM.Example.COM:8443/agent/book?x=1#frag")
    assert (destination.host, destination.port, destination.literal, destination.listed) == (
        "crm.example.com",
        8443,
        None,
        False,
    )
    assert destination.host_header == "crm.example.com:8443"
    assert str(destination.pinned_url(ipaddress.ip_address("93.184.215.14"))) == (
        "https://93.184.215.14:8443/agent/book?x=1#frag"
    )
    assert PUBLIC.destination("https://crm.example.com/").host_header == "crm.example.com"
    assert PUBLIC.destination("https://crm.example.com:443/").host_header == "crm.example.com"
    assert PUBLIC.destination("https://xn--bcher-kva.example/").host == "xn--bcher-kva.example"
    assert PUBLIC.destination("https://8.8.8.8/").literal == ipaddress.ip_address("8.8.8.8")
    v6 = PUBLIC.destination("https://[2606:4700:4700::1111]:8443/")
    assert v6.host_header == "[2606:4700:4700::1111]:8443"
    assert str(v6.pinned_url(ipaddress.ip_address("2606:4700:4700::1111"))) == "https://[2606:4700:4700::1111]:8443/"
    assert PUBLIC.destination("https://[64:ff9b::808:808]/").listed is False  # NAT64 of 8.8.8.8 is public


def test_resolved_addresses_are_all_checked() -> None:
    destination = PUBLIC.destination("https://crm.example.com/")
    PUBLIC.check_addresses(destination, [ipaddress.ip_address("93.184.215.14")])
    with pytest.raises(DestinationRefused, match=r"crm.example.com resolves to 10.0.0.7, not a public address"):
        PUBLIC.check_addresses(destination, [ipaddress.ip_address(a) for a in ("93.184.215.14", "10.0.0.7")])
    with pytest.raises(DestinationRefused, match="did not resolve to any address"):
        PUBLIC.check_addresses(destination, [])
    listed = OutboundPolicy(frozenset({"crm.internal"})).destination("http://crm.internal/")
    OutboundPolicy(frozenset({"crm.internal"})).check_addresses(listed, [ipaddress.ip_address("10.0.0.7")])


@given(st.ip_addresses(v=4))
def test_every_ipv4_we_allow_is_global_unicast_by_the_stdlib_too(address: ipaddress.IPv4Address) -> None:
    if address_refusal(address) is None:
        assert address.is_global and not address.is_multicast
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    assert (address_refusal(mapped) is None) == (address_refusal(address) is None)
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | int(address))
    assert (address_refusal(nat64) is None) == (address_refusal(address) is None)


@given(st.ip_addresses(v=6))
def test_every_ipv6_we_allow_is_global_unicast_by_the_stdlib_too(address: ipaddress.IPv6Address) -> None:
    if address.ipv4_mapped is None and address not in ipaddress.IPv6Network("64:ff9b::/96"):
        if address_refusal(address) is None:
            assert address.is_global and not address.is_multicast


def test_allowed_hosts_parsing() -> None:
    assert parse_allowed_hosts("") == frozenset()
    assert parse_allowed_hosts(" 127.0.0.1, localhost ,,CRM.Internal,[::1], 0:0::1") == frozenset(
        {"127.0.0.1", "localhost", "crm.internal", "::1"}
    )
    assert OutboundPolicy.from_setting("[::1]").destination("http://[::1]:9/").listed


@pytest.mark.parametrize(
    "entry",
    ["http://127.0.0.1", "127.0.0.1:8080", "crm.internal/hook", "*", "*.example.com", "user@host", "0x7f.1",
     "bücher.example", "a..b", "fe80::1%eth0", "a b"],
)  # fmt: skip
def test_allowed_hosts_entries_must_be_bare_hosts(entry: str) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_ALLOWED_HOSTS entries must be bare host names"):
        parse_allowed_hosts(f"127.0.0.1,{entry}")


def test_allowed_hosts_are_bounded() -> None:
    with pytest.raises(ValueError, match=f"more than {MAX_ALLOWED_HOSTS}"):
        parse_allowed_hosts(",".join(f"h{i}.internal" for i in range(MAX_ALLOWED_HOSTS + 1)))
