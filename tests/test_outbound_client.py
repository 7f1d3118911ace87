"""The outbound client against a real loopback receiver: signed requests, every way an answer can go wrong, refused
destinations (nothing sent), DNS rebinding, and the connection going to the checked address."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import tracemalloc
from collections.abc import Awaitable
from typing import Any

import httpx
import pytest

from call_state.outbound import Failure, OutboundClient, OutboundResult, system_resolver
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import SIGNATURE_HEADER, WebhookSigner
from tests.standins.processes import free_port
from tests.standins.receiver import FakeResolver, Receiver

SECRET = b"test-webhook-secret-not-real"
SIGNER = WebhookSigner(SECRET)
LOCAL = OutboundPolicy(frozenset({"127.0.0.1"}))
PUBLIC_IP = "93.184.215.14"


@pytest.fixture
def receiver() -> Any:
    with Receiver(SECRET) as running:
        yield running


def client(policy: OutboundPolicy = LOCAL, **options: Any) -> OutboundClient:
    return OutboundClient(SIGNER, policy, **options)


class NoNetwork(httpx.AsyncBaseTransport):
    """A transport that must never be reached: a refused destination sends nothing."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, json={"reached": True})


async def with_peak_memory(request: Awaitable[OutboundResult]) -> tuple[OutboundResult, int]:
    """The result and the peak of memory allocated (in any thread) while it ran."""
    tracemalloc.start()
    try:
        result = await request
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_a_tool_call_is_signed_and_answered() -> None:
    payload = {"call_id": "c1", "tool_call_id": "fc1", "name": "book_slot", "arguments": {"day": "Mo ✓"}}
    with Receiver(SECRET, clock=lambda: 1_767_225_660.0) as receiver:
        receiver.reply("/book", json={"booked": True, "slot": "mon 10:00"})
        outbound = client(clock=lambda: 1_767_225_600.2)
        result = await outbound.post_json(receiver.url("/book?tenant=a"), payload, headers={"Idempotency-Key": "fc1"})
        await outbound.aclose()
    assert (
        result.ok and result.delivered and (result.status, result.data) == (200, {"booked": True, "slot": "mon 10:00"})
    )
    assert result.failure is None and result.detail == "" and result.elapsed_ms > 0
    (got,) = receiver.received
    assert got.signature_ok and got.json == payload and got.path == "/book?tenant=a"
    assert got.body == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    assert got.headers[SIGNATURE_HEADER.lower()].startswith("t=1767225600,v1=")
    assert got.headers["host"] == f"127.0.0.1:{receiver.port}" and got.headers["content-type"] == "application/json"
    assert got.headers["idempotency-key"] == "fc1" and got.headers["user-agent"].startswith("phone-voice-agent/")


async def test_a_slow_server_times_out_and_the_client_goes_on(receiver: Receiver) -> None:
    receiver.reply("/slow", delay_s=30)
    outbound = client()
    slow = await outbound.post_json(receiver.url("/slow"), {}, timeout_s=0.3)
    after = await outbound.post_json(receiver.url("/fine"), {})
    await outbound.aclose()
    assert (slow.failure, slow.detail, slow.status) == (Failure.TIMEOUT, "no answer within 0.3 s", None)
    assert slow.elapsed_ms < 5000 and after.ok


async def test_a_drip_fed_body_cannot_outlast_the_deadline(receiver: Receiver) -> None:
    # One byte every 50 ms never trips a per-read timeout; the single deadline still ends it.
    receiver.reply("/drip", stream_bytes=100_000, chunk_bytes=1, chunk_delay_s=0.05)
    outbound = client()
    result = await outbound.post_json(receiver.url("/drip"), {}, timeout_s=1.0)
    await outbound.aclose()
    assert result.failure is Failure.TIMEOUT and result.elapsed_ms < 10_000


@pytest.mark.parametrize(("status", "detail"), [(500, "HTTP 500"), (404, "HTTP 404"), (429, "HTTP 429")])
async def test_non_2xx_is_an_error_with_its_status(receiver: Receiver, status: int, detail: str) -> None:
    receiver.reply("/x", status=status, json={"error": "nope"})
    outbound = client()
    result = await outbound.post_json(receiver.url("/x"), {})
    hook = await outbound.post_json(receiver.url("/x"), {}, read_json=False)
    await outbound.aclose()
    assert (result.failure, result.status, result.detail) == (Failure.STATUS, status, detail)
    assert not result.delivered and not hook.delivered and hook.failure is Failure.STATUS


async def test_a_receiver_with_another_secret_answers_401() -> None:
    with Receiver(b"someone-elses-secret-not-real") as other:
        outbound = client()
        result = await outbound.post_json(other.url("/x"), {})
        await outbound.aclose()
    assert (result.failure, result.status) == (Failure.STATUS, 401)
    assert other.received[0].signature_error == "signature does not match the body"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"<html>oops</html>", "not valid JSON"),
        (b"", "empty response body"),
        (b'{"x": NaN}', "not valid JSON"),
        (b'{"x": -Infinity}', "not valid JSON"),
        (b'{"x": 1e999}', "not valid JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),  # nesting deep enough to blow the C stack guard
        (b'{"x": "\xff\xfe"}', "not valid JSON"),  # not UTF-8
        (b'{"x": ' + b"9" * 5000 + b"}", "not valid JSON"),  # over Python's int digit limit
    ],
)
async def test_bodies_that_are_not_json_we_accept(receiver: Receiver, body: bytes, detail: str) -> None:
    receiver.reply("/x", body=body)
    outbound = client()
    result = await outbound.post_json(receiver.url("/x"), {})
    hook = await outbound.post_json(receiver.url("/x"), {}, read_json=False)
    await outbound.aclose()
    assert (result.failure, result.status) == (Failure.BAD_JSON, 200) and detail in result.detail
    assert result.delivered  # the server did answer 2xx: a webhook would be done
    assert hook.ok and hook.delivered and hook.data is None


async def test_204_is_ok_without_a_body(receiver: Receiver) -> None:
    receiver.reply("/x", status=204, body=b"")
    outbound = client()
    result = await outbound.post_json(receiver.url("/x"), {})
    await outbound.aclose()
    assert result.ok and (result.status, result.data) == (204, None)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed(receiver: Receiver, status: int) -> None:
    receiver.reply("/moved", status=status, redirect_to=receiver.url("/target"))
    receiver.reply("/metadata", status=status, redirect_to="http://169.254.169.254/latest/meta-data/")
    outbound = client()
    result = await outbound.post_json(receiver.url("/moved"), {})
    sneaky = await outbound.post_json(receiver.url("/metadata"), {})
    await outbound.aclose()
    assert (result.failure, result.status) == (Failure.STATUS, status) and "not followed" in result.detail
    assert sneaky.failure is Failure.STATUS
    assert receiver.deliveries("/target") == 0 and receiver.deliveries() == 2


async def test_an_endless_body_is_cut_at_the_limit_with_bounded_memory(receiver: Receiver) -> None:
    receiver.reply("/endless", stream_bytes=1 << 30)  # 1 GiB if nobody hangs up
    outbound = client(max_response_bytes=256 * 1024)
    result, peak = await with_peak_memory(outbound.post_json(receiver.url("/endless"), {}))
    after = await outbound.post_json(receiver.url("/fine"), {})
    await outbound.aclose()
    assert (result.failure, result.detail) == (Failure.TOO_LARGE, "response body is over 262144 bytes")
    assert peak < 8 << 20 and after.ok


async def test_a_declared_oversized_body_is_refused(receiver: Receiver) -> None:
    receiver.reply("/big", body=b" " * (2 << 20) + b"{}")
    outbound = client()
    result = await outbound.post_json(receiver.url("/big"), {})
    await outbound.aclose()
    assert result.failure is Failure.TOO_LARGE and result.status == 200


async def test_gzip_is_decoded_and_a_gzip_bomb_is_cut(receiver: Receiver) -> None:
    receiver.reply("/gzip", body=gzip.compress(b'{"ok": "compressed"}'), headers={"Content-Encoding": "gzip"})
    bomb = gzip.compress(b" " * (64 << 20))  # 64 MiB of spaces in ~64 KiB
    receiver.reply("/bomb", body=bomb, headers={"Content-Encoding": "gzip"})
    receiver.reply("/broken", body=b"\x1f\x8b not gzip at all", headers={"Content-Encoding": "gzip"})
    receiver.reply("/brotli", body=b"\x0b\x02\x80{}\x03", headers={"Content-Encoding": "br"})
    outbound = client()
    cut, peak = await with_peak_memory(outbound.post_json(receiver.url("/bomb"), {}))
    results = [await outbound.post_json(receiver.url(p), {}) for p in ("/gzip", "/broken", "/brotli")]
    await outbound.aclose()
    assert len(bomb) < (1 << 20) and cut.failure is Failure.TOO_LARGE and peak < 8 << 20
    assert results[0].ok and results[0].data == {"ok": "compressed"}
    assert (results[1].failure, results[1].detail) == (Failure.BAD_JSON, "response body does not decompress")
    assert results[2].failure is Failure.BAD_JSON and "Content-Encoding" in results[2].detail


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("http://localhost:{port}/x", "http:// is only allowed"),  # 127.0.0.1 is listed, localhost is not
        ("https://localhost:{port}/x", "localhost resolves to"),  # resolved by the real getaddrinfo: loopback
        ("http://2130706433:{port}/x", "numeric spelling"),
        ("http://0x7f.1:{port}/x", "numeric spelling"),
        ("http://0x7f000001:{port}/x", "numeric spelling"),
        ("http://127.1:{port}/x", "numeric spelling"),
        ("http://127.0.0.1.:{port}/x", "numeric spelling"),
        ("http://0177.0.0.1:{port}/x", "not a valid URL"),
        ("http://[::ffff:127.0.0.1]:{port}/x", "http:// is only allowed"),
        ("https://[::ffff:127.0.0.1]:{port}/x", "IPv4-mapped loopback"),
        ("http://user@127.0.0.1:{port}/x", "user name"),
        ("http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11:{port}/x", "printable ASCII"),
        ("http://127.0.0.1%2f@example.com:{port}/x", "user name"),
    ],
)
async def test_spellings_of_a_listed_address_are_not_the_listed_host(
    receiver: Receiver, template: str, reason: str
) -> None:
    outbound = client(resolver=system_resolver)
    url = template.format(port=receiver.port)
    result = await outbound.post_json(url, {})
    accepted = await outbound.check(url)
    await outbound.aclose()
    assert result.failure is Failure.REFUSED and reason in result.detail and accepted == result.detail
    assert receiver.deliveries() == 0  # every one of these would have reached the receiver if it were sent


@pytest.mark.parametrize(
    ("url", "answers", "reason"),
    [
        ("https://10.0.0.5/hook", {}, "10.0.0.5 is not a public address (private)"),
        ("https://169.254.169.254/latest/meta-data/iam/", {}, "link-local (cloud metadata"),
        ("http://crm.example.com/hook", {"crm.example.com": [PUBLIC_IP]}, "http:// is only allowed"),
        ("https://crm.example.com/", {"crm.example.com": ["169.254.169.254"]}, "resolves to 169.254.169.254"),
        ("https://crm.example.com/", {"crm.example.com": [PUBLIC_IP, "10.1.2.3"]}, "resolves to 10.1.2.3"),
        ("https://crm.example.com/", {"crm.example.com": ["::ffff:10.1.2.3"]}, "IPv4-mapped private"),
        ("https://crm.example.com/", {"crm.example.com": ["100.100.100.200"]}, "CGNAT"),  # Alibaba metadata
        ("https://crm.example.com/", {"crm.example.com": ["fd00:ec2::254"]}, "unique local"),
        ("https://crm.example.com/", {"crm.example.com": []}, "did not resolve to any address"),
        ("https://crm.example.com/", {"crm.example.com": ["not-an-ip"]}, "unreadable address"),
    ],
)
async def test_refused_destinations_send_nothing(url: str, answers: dict[str, list[str]], reason: str) -> None:
    network = NoNetwork()
    outbound = client(OutboundPolicy(), resolver=FakeResolver(answers), transport=network)
    result = await outbound.post_json(url, {"secret": "stays home"})
    assert (result.failure, result.status) == (Failure.REFUSED, None) and reason in result.detail
    assert await outbound.check(url) == result.detail and network.requests == []


async def test_dns_rebinding_between_check_and_request_is_refused() -> None:
    resolver, network = FakeResolver({"crm.example.com": [PUBLIC_IP]}), NoNetwork()
    outbound = client(OutboundPolicy(), resolver=resolver, transport=network)
    assert await outbound.check("https://crm.example.com/agent/events") is None  # /make-call accepts it
    resolver.change("crm.example.com", ["127.0.0.1"])  # the attacker's DNS now points inside
    result = await outbound.post_json("https://crm.example.com/agent/events", {})
    assert result.failure is Failure.REFUSED and "resolves to 127.0.0.1" in result.detail
    assert network.requests == [] and resolver.calls == ["crm.example.com", "crm.example.com"]


async def test_the_request_goes_to_the_checked_ip_with_the_name_in_host_and_sni() -> None:
    network = NoNetwork()
    resolver = FakeResolver({"crm.example.com": [PUBLIC_IP]})
    outbound = client(OutboundPolicy(), resolver=resolver, transport=network)
    result = await outbound.post_json("https://crm.example.com:8443/agent/book?x=1", {"a": 1})
    assert result.ok and result.data == {"reached": True}
    (request,) = network.requests
    assert str(request.url) == f"https://{PUBLIC_IP}:8443/agent/book?x=1"
    assert request.headers["host"] == "crm.example.com:8443"
    assert request.extensions["sni_hostname"] == "crm.example.com"
    assert resolver.calls == ["crm.example.com"]  # resolved once, by us


async def test_the_connection_goes_to_the_address_we_resolved(receiver: Receiver) -> None:
    # The system cannot resolve this name: the request arrives only if it went to the address we checked.
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("pinned.test", receiver.port)
    resolver = FakeResolver({"pinned.test": ["127.0.0.1"]})
    outbound = client(OutboundPolicy(frozenset({"pinned.test"})), resolver=resolver)
    result = await outbound.post_json(f"http://pinned.test:{receiver.port}/x", {})
    await outbound.aclose()
    assert result.ok and receiver.received[0].headers["host"] == f"pinned.test:{receiver.port}"


async def test_a_listed_name_is_reached_even_if_its_first_address_is_dead(receiver: Receiver) -> None:
    # The receiver listens on 127.0.0.1 only: 127.0.0.2 refuses the connection, nothing was sent, next address.
    resolver = FakeResolver({"two.test": ["127.0.0.2", "127.0.0.1"], "dead.test": ["127.0.0.2", "127.0.0.3"]})
    outbound = client(OutboundPolicy(frozenset({"two.test", "dead.test"})), resolver=resolver)
    result = await outbound.post_json(f"http://two.test:{receiver.port}/x", {})
    dead = await outbound.post_json(f"http://dead.test:{receiver.port}/x", {})
    await outbound.aclose()
    assert result.ok and receiver.deliveries() == 1
    assert (dead.failure, dead.detail) == (Failure.CONNECT, "could not connect: connection refused")


async def test_a_black_holed_first_address_gets_its_share_of_the_deadline(receiver: Receiver) -> None:
    # A listening socket whose accept queue is full drops SYNs: connecting to it hangs, like a firewalled host.
    with socket.socket() as hole:
        hole.bind(("127.0.0.2", receiver.port))
        hole.listen(0)
        fillers = [socket.socket() for _ in range(4)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.2", receiver.port))
        resolver = FakeResolver({"hole.test": ["127.0.0.2", "127.0.0.1"], "deep.test": ["127.0.0.2"]})
        outbound = client(OutboundPolicy(frozenset({"hole.test", "deep.test"})), resolver=resolver)
        result = await outbound.post_json(f"http://hole.test:{receiver.port}/x", {}, timeout_s=2.0)
        stuck = await outbound.post_json(f"http://deep.test:{receiver.port}/x", {}, timeout_s=0.5)
        await outbound.aclose()
        for filler in fillers:
            filler.close()
    assert result.ok and receiver.deliveries() == 1 and result.elapsed_ms >= 900  # waited its 1 s share, no more
    assert stuck.failure is Failure.TIMEOUT  # one address: the deadline is the answer


async def test_localhost_when_listed_goes_through(receiver: Receiver) -> None:
    outbound = client(OutboundPolicy(frozenset({"localhost"})), resolver=system_resolver)
    result = await outbound.post_json(receiver.url("/x", host="localhost"), {})
    await outbound.aclose()
    assert result.ok and receiver.received[0].headers["host"] == f"localhost:{receiver.port}"


async def test_nothing_listening_and_unknown_names() -> None:
    outbound = client(OutboundPolicy(frozenset({"127.0.0.1", "nowhere.test"})), resolver=FakeResolver({}))
    refused = await outbound.post_json(f"http://127.0.0.1:{free_port()}/x", {})
    unknown = await outbound.post_json("http://nowhere.test/x", {})
    reason = await outbound.check("http://nowhere.test/x")
    await outbound.aclose()
    assert (refused.failure, refused.detail) == (Failure.CONNECT, "could not connect: connection refused")
    assert unknown.failure is Failure.DNS and "nowhere.test could not be resolved" in unknown.detail
    assert reason == unknown.detail


async def test_a_resolver_that_hangs_is_bounded_too() -> None:
    async def hangs(host: str, port: int) -> list[str]:
        await asyncio.sleep(60)
        return []

    outbound = client(OutboundPolicy(), resolver=hangs, transport=NoNetwork())
    result = await outbound.post_json("https://crm.example.com/", {}, timeout_s=0.2)
    assert result.failure is Failure.TIMEOUT
    assert await outbound.check("https://crm.example.com/", timeout_s=0.2) == "the host did not resolve within 0.2 s"


@pytest.mark.parametrize("payload", [{"x": float("nan")}, {"x": object()}, {1j: 2}])
async def test_a_payload_that_is_not_json_is_a_result_not_a_crash(payload: object) -> None:
    network = NoNetwork()
    result = await client(transport=network).post_json("http://127.0.0.1/x", payload)
    assert result.failure is Failure.PAYLOAD and network.requests == []


@pytest.mark.parametrize("name", ["Host", "content-type", SIGNATURE_HEADER, "Content-Length"])
async def test_reserved_headers_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ValueError, match="headers may not set"):
        await client(transport=NoNetwork()).post_json("http://127.0.0.1/x", {}, headers={name: "x"})


@pytest.mark.parametrize("timeout_s", [0, -1, float("nan"), float("inf"), 301])
async def test_a_timeout_out_of_range_is_a_programming_error(timeout_s: float) -> None:
    with pytest.raises(ValueError, match="timeout_s must be in"):
        await client(transport=NoNetwork()).post_json("http://127.0.0.1/x", {}, timeout_s=timeout_s)


async def test_cancelling_a_request_in_flight(receiver: Receiver) -> None:
    receiver.reply("/slow", delay_s=30)
    outbound = client()
    task = asyncio.create_task(outbound.post_json(receiver.url("/slow"), {}))
    await asyncio.to_thread(receiver.wait_for, 1, "/slow")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await outbound.post_json(receiver.url("/fine"), {})
    await outbound.aclose()
    assert after.ok and receiver.deliveries("/slow") == 1


async def test_concurrent_requests_are_each_delivered_once(receiver: Receiver) -> None:
    receiver.reply("/x", delay_s=0.05)
    outbound = client()
    results = await asyncio.gather(*(outbound.post_json(receiver.url("/x"), {"n": n}) for n in range(40)))
    await outbound.aclose()
    assert [r for r in results if not r.ok] == []
    assert sorted(r.json["n"] for r in receiver.received) == list(range(40))


def test_each_event_loop_gets_its_own_connections(receiver: Receiver) -> None:
    # Lambda (Mangum) may run every invocation on a new loop: pooled connections of the old one are not reused.
    outbound = client()
    first = asyncio.run(outbound.post_json(receiver.url("/x"), {}))
    second = asyncio.run(outbound.post_json(receiver.url("/x"), {}))
    assert first.ok and second.ok and [r.connection for r in receiver.received] == [1, 2]
