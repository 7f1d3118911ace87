"""HTTPS with the address pinned: the certificate is checked for the name while the connection goes to the address
we checked, and a connection verified for one name never carries a request for another (per-destination pools).
The receiver serves a throwaway CA's certificate on 127.0.0.1; made-up names resolve there through FakeResolver."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from call_state.outbound import Failure, OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_pool import DestinationPools
from call_state.outbound_signature import WebhookSigner
from tests.standins.receiver import FakeResolver, Receiver, ThrowawayTls, make_tls

SECRET = b"test-webhook-secret-not-real"
NAMES = ["crm.test", "other.test", "third.test", "wrong.test"]
CERT_NAMES = ["crm.test", "other.test", "third.test", "127.0.0.1"]  # wrong.test is not on the certificate


@pytest.fixture(scope="module")
def tls() -> ThrowawayTls:
    return make_tls(CERT_NAMES)


@pytest.fixture
def receiver(tls: ThrowawayTls) -> Iterator[Receiver]:
    with Receiver(SECRET, tls=tls.server()) as running:
        yield running


def client(tls: ThrowawayTls, **options: Any) -> OutboundClient:
    # Every name here resolves to loopback, so each is listed (that is what WEBHOOK_ALLOWED_HOSTS is for).
    policy = OutboundPolicy(frozenset([*NAMES, "127.0.0.1"]))
    resolver = FakeResolver({name: ["127.0.0.1"] for name in NAMES})
    return OutboundClient(WebhookSigner(SECRET), policy, resolver=resolver, ssl_context=tls.client, **options)


async def test_tls_is_verified_for_the_name_while_connecting_to_the_checked_address(
    tls: ThrowawayTls, receiver: Receiver
) -> None:
    outbound = client(tls)
    result = await outbound.post_json(receiver.url("/book", host="crm.test"), {"day": "monday"})
    await outbound.aclose()
    assert result.ok and result.data == {"ok": True}
    (got,) = receiver.received
    assert (got.sni, got.headers["host"], got.signature_ok) == ("crm.test", f"crm.test:{receiver.port}", True)


async def test_two_names_on_one_address_never_share_a_connection(tls: ThrowawayTls, receiver: Receiver) -> None:
    outbound = client(tls)
    for name in ("crm.test", "other.test", "crm.test", "other.test"):
        assert (await outbound.post_json(receiver.url("/x", host=name), {})).ok
    await outbound.aclose()
    seen = [(r.headers["host"].split(":")[0], r.sni, r.connection) for r in receiver.received]
    assert [(host, sni) for host, sni, _ in seen] == [(h, h) for h in ("crm.test", "other.test") * 2]
    assert seen[0][2] == seen[2][2] and seen[1][2] == seen[3][2]  # kept alive, reused for the same name only
    assert seen[0][2] != seen[1][2]


async def test_a_certificate_for_other_names_is_refused(tls: ThrowawayTls, receiver: Receiver) -> None:
    outbound = client(tls)
    result = await outbound.post_json(receiver.url("/x", host="wrong.test"), {})
    await outbound.aclose()
    assert (result.failure, result.detail) == (
        Failure.CONNECT,
        "could not connect: TLS certificate not valid for this host",
    )
    assert receiver.deliveries() == 0


async def test_an_unknown_ca_is_refused_by_default(receiver: Receiver) -> None:
    outbound = OutboundClient(
        WebhookSigner(SECRET),
        OutboundPolicy(frozenset({"crm.test"})),
        resolver=FakeResolver({"crm.test": ["127.0.0.1"]}),
    )  # the system's trust store: our throwaway CA is not in it
    result = await outbound.post_json(receiver.url("/x", host="crm.test"), {})
    await outbound.aclose()
    assert result.failure is Failure.CONNECT and "TLS certificate" in result.detail and receiver.deliveries() == 0


async def test_an_ip_address_url_is_verified_against_the_ip(tls: ThrowawayTls, receiver: Receiver) -> None:
    outbound = client(tls)
    result = await outbound.post_json(receiver.url("/x"), {})
    await outbound.aclose()
    assert result.ok and receiver.received[0].sni is None  # no SNI for an IP address (RFC 6066)


async def test_pools_are_bounded_and_still_serve_every_destination(tls: ThrowawayTls, receiver: Receiver) -> None:
    pools = DestinationPools(tls.client, max_pools=2)
    outbound = client(tls, pools=pools)
    for name in ("crm.test", "other.test", "third.test", "crm.test"):
        assert (await outbound.post_json(receiver.url("/x", host=name), {})).ok
        assert len(pools) <= 2
    await outbound.aclose()
    connections = [r.connection for r in receiver.received]
    assert len(set(connections)) == 4  # crm.test's pool was closed to make room, so its second request reconnects
    assert [r.sni for r in receiver.received] == ["crm.test", "other.test", "third.test", "crm.test"]


async def test_a_pool_is_not_closed_under_a_response_being_read(tls: ThrowawayTls, receiver: Receiver) -> None:
    # One pool allowed: while crm.test's slow body is being read, other.test must not evict (close) that pool.
    receiver.reply("/drip", stream_bytes=4000, chunk_bytes=200, chunk_delay_s=0.03)
    pools = DestinationPools(tls.client, max_pools=1)
    outbound = client(tls, pools=pools)
    slow = asyncio.create_task(outbound.post_json(receiver.url("/drip", host="crm.test"), {}))
    await asyncio.to_thread(receiver.wait_for, 1, "/drip")
    quick = await outbound.post_json(receiver.url("/x", host="other.test"), {})
    result = await slow
    await outbound.aclose()
    assert quick.ok and len(pools) <= 1
    assert result.ok and result.data == {}  # the whole 4000-byte body arrived
