"""X-Voice-Agent-Signature: signing, our verifier, the 10-line example users copy from docs/webhooks.md, and the
all-in-one secret file. The doc example is read from the doc itself and run against real signed requests."""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from call_state.local_setup import persistent_secret
from call_state.outbound import OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import SIGNATURE_HEADER, SignatureError, WebhookSigner
from tests.standins.receiver import Receiver

SECRET = b"test-webhook-secret-not-real"
SIGNER = WebhookSigner(SECRET)
NOW = 1_767_225_600.7
DOC = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"

Verify = Callable[..., bool]


def doc_example() -> tuple[str, Verify]:
    """The python block that follows the verify-example marker in docs/webhooks.md, executed."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- verify-example:[^>]*-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/webhooks.md lost its verify example"
    namespace: dict[str, object] = {}
    exec(compile(match.group(1), str(DOC), "exec"), namespace)
    verify = namespace["verify"]
    assert callable(verify)
    return match.group(1), verify  # type: ignore[return-value]


def test_header_format_is_exactly_as_documented() -> None:
    body = b'{"event":"call.ended"}'
    header = SIGNER.sign(body, NOW)
    expected = hmac.new(SECRET, b"1767225600." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"
    assert re.fullmatch(r"t=[0-9]+,v1=[0-9a-f]{64}", header)
    assert 't=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, "<t>.<raw body>")>' in DOC.read_text()


def test_verify_accepts_a_fresh_signature_and_returns_its_time() -> None:
    body = b'{"a":1}'
    assert SIGNER.verify(SIGNER.sign(body, NOW), body, NOW + 299) == 1767225600
    assert SIGNER.verify(SIGNER.sign(body, NOW), body, NOW - 299) == 1767225600  # a receiver's clock runs behind


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (SIGNER.sign(b"{}", NOW), b'{"a":1}', NOW, "does not match"),  # tampered body
        (WebhookSigner(b"another-secret-not-real").sign(b"{}", NOW), b"{}", NOW, "does not match"),
        (SIGNER.sign(b"{}", NOW), b"{}", NOW + 301, "replay window"),  # replayed 5 minutes later
        (SIGNER.sign(b"{}", NOW + 301), b"{}", NOW, "replay window"),  # from the future
        ("", b"{}", NOW, "missing"),
        ("t=1767225600", b"{}", NOW, "needs t="),
        ("v1=00", b"{}", NOW, "needs t="),
        ("t=²,v1=00", b"{}", NOW, "malformed"),  # a superscript two is a digit to str.isdigit()
        ("t=99999999999999,v1=00", b"{}", NOW, "needs t="),
        ("t=1,t=2,v1=00", b"{}", NOW, "two timestamps"),
        ("garbage", b"{}", NOW, "malformed"),
        ("t=1767225600,v1=é", b"{}", NOW, "malformed"),
        ("t=" + "9" * 5000 + ",v1=00", b"{}", NOW, "malformed"),
    ],
)
def test_verify_refuses(header: str, body: bytes, now: float, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        SIGNER.verify(header, body, now)


def test_verify_accepts_any_of_several_v1_during_a_rotation() -> None:
    old = WebhookSigner(b"old-webhook-secret-not-real")
    header = f"{old.sign(b'{}', NOW)},v1={SIGNER.sign(b'{}', NOW).split('v1=')[1]}"
    assert SIGNER.verify(header, b"{}", NOW) and old.verify(header, b"{}", NOW)


@given(st.text(max_size=300), st.binary(max_size=64))
def test_verify_never_raises_anything_but_signature_error(header: str, body: bytes) -> None:
    try:
        SIGNER.verify(header, body, NOW)
    except SignatureError:
        pass


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        WebhookSigner(b"too-short")


def test_the_doc_example_is_ten_lines_of_stdlib() -> None:
    code, _ = doc_example()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 10
    assert {m for line in lines for m in re.findall(r"^import (.*)$", line)} == {"hashlib, hmac, time"}
    assert not [line for line in lines if line.startswith("from ")]


async def test_the_doc_example_verifies_a_real_signed_request() -> None:
    _, verify = doc_example()
    with Receiver(SECRET) as receiver:
        client = OutboundClient(SIGNER, OutboundPolicy(frozenset({"127.0.0.1"})))
        result = await client.post_json(receiver.url("/events"), {"event": "call.ended", "name": "Zoë ✓"})
        stale = OutboundClient(SIGNER, OutboundPolicy(frozenset({"127.0.0.1"})), clock=lambda: time.time() - 301)
        replayed = await stale.post_json(receiver.url("/events"), {"event": "call.ended"})
        await client.aclose()
        await stale.aclose()
    assert result.ok and replayed.status == 401  # the receiver stand-in refuses what does not verify
    fresh, old = receiver.received
    header = fresh.headers[SIGNATURE_HEADER.lower()]
    assert fresh.signature_ok and verify(SECRET, header, fresh.body)
    assert "Zoë ✓".encode() in fresh.body  # what is signed is the UTF-8 body as sent
    assert not verify(SECRET, header, fresh.body.replace(b"ended", b"ENDED"))
    assert not verify(b"another-secret-not-real", header, fresh.body)
    assert not verify(SECRET, old.headers[SIGNATURE_HEADER.lower()], old.body)  # older than 5 minutes


@pytest.mark.parametrize(
    "header", ["", "t=", "v1=", "t=²,v1=00", "t=1,v1=é", "t=" + "9" * 5000, ",,,", "t==,v1==", "x" * 10000]
)
def test_the_doc_example_refuses_hostile_headers_without_raising(header: str) -> None:
    _, verify = doc_example()
    assert verify(SECRET, header, b"{}") is False


def test_the_secret_file_is_created_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "webhook_secret"
    first, created = persistent_secret(path, 32, prefix="whsec_")
    assert created and len(first) >= 32 and persistent_secret(path) == (first, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["webhook_secret"]  # no scratch files left behind
    WebhookSigner(first.encode())


def test_processes_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "webhook_secret"
    results: list[str] = []
    start = threading.Barrier(8)

    def racer() -> None:
        start.wait()
        results.append(persistent_secret(path, 32)[0])

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 8 and len(set(results)) == 1 and path.read_text().strip() == results[0]


def test_a_short_secret_file_is_an_error_not_a_weak_key(tmp_path: Path) -> None:
    path = tmp_path / "webhook_secret"
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        persistent_secret(path)
