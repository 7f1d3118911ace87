"""Limits before parsing: bodies are counted as they arrive (chunked included), JSON is bounded in depth.

In process (ASGI) for the exact answers, and against a real `python -m all_in_one` process for what an attacker
costs it: peak RSS (VmHWM) and files in its temp directory, while 200-300 MB bodies are thrown at it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from call_state.store import CallStore
from lambda_api.limits import MAKE_CALL_MAX_BYTES, BodyLimits, json_depth
from tests.body_attacks import ATTACKS, DiskWatch, chunked_upload, peak_rss_kib
from tests.control_helpers import ACCOUNT_SID, API_KEY, AUTH, AUTH_TOKEN, control_api, make_call
from tests.standins.processes import free_port, wait_for_port
from tests.standins.twilio_rest import TwilioRestStandIn

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def api(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    async with control_api(twilio, sqlite_store) as client:
        yield client


class Pulled:
    """A request body the client produces lazily, counting how much of it the server pulled."""

    def __init__(self, total: int, chunk: bytes = b"x" * 65536) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += len(self.chunk)
            yield self.chunk


async def test_chunked_json_stops_at_the_limit(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    body = Pulled(200 * 2**20)
    r = await api.post("/make-call", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert r.headers["connection"] == "close"  # the rest is never read
    assert body.pulled <= MAKE_CALL_MAX_BYTES + 65536 and twilio.dials == 0


async def test_declared_length_over_the_limit_is_refused_unread(api: httpx.AsyncClient) -> None:
    body = Pulled(10 * 2**20)
    headers = {**AUTH, "Content-Type": "application/json", "Content-Length": str(10 * 2**20)}
    r = await api.post("/make-call", content=body, headers=headers)
    assert r.status_code == 413 and body.pulled <= 65536


async def test_unauthenticated_bodies_are_never_read(api: httpx.AsyncClient) -> None:
    body = Pulled(50 * 2**20)
    r = await api.post("/make-call", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.headers["connection"] == "close" and body.pulled <= 65536


@pytest.mark.parametrize("path", ["/status/c_x", "/incoming", "/twiml/c_x", "/stream-status/c_x", "/amd/c_x",
                                  "/recording/c_x"])  # fmt: skip
async def test_webhook_bodies_stop_at_64_kib(api: httpx.AsyncClient, path: str) -> None:
    body = Pulled(100 * 2**20, b"a=" + b"b" * 65534)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "bogus"}
    r = await api.post(path, content=body, headers=headers)
    assert r.status_code == 413 and body.pulled <= 2 * 65536


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 16_000 + b"]" * 16_000, "nest"),  # was a RecursionError -> 500
        (b'{"destination_number": "+15551230000", "metadata": ' + b'{"a": ' * 20 + b"1" + b"}" * 21, "nest"),
        (b'{"destination_number": "+15551230000", "metadata": {"x": NaN}}', "JSON object"),
        (b'{"destination_number": "+15551230000", "metadata": {"x": Infinity}}', "JSON object"),
        ('{"destination_number": "+15551230000", "greeting": "\udcff"}'.encode("utf-8", "surrogatepass"), "JSON"),
        (b"\xff\xfe{}", "JSON object"),
    ],
)
async def test_hostile_json_is_400(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, body: bytes, message: str
) -> None:
    r = await api.post("/make-call", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and message in r.json()["error"]["message"], r.text
    assert twilio.dials == 0


async def test_reasonable_nesting_still_dials(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    metadata: dict[str, object] = {"leaf": 1}
    for i in range(13):  # the body object + metadata + 13 levels = 15
        metadata = {f"k{i}": metadata, "s": "[[[{{{ brackets in strings do not count"}
    r = await make_call(api, {"destination_number": "+15551230000", "metadata": metadata})  # type: ignore[dict-item]
    assert r.status_code == 201, r.text
    assert twilio.dials == 1


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": "[[[[", "b": [1, {"c": "\\"]]]"}]}', 99) == 3
    assert json_depth(b"[" * 100, 10) == 10  # stops counting at the bound


async def test_slow_bodies_time_out_with_408() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        from lambda_api.errors import ApiError

        try:
            while (await receive()).get("more_body"):
                pass
            status = 200
        except ApiError as exc:
            status = exc.status
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def trickle() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"x"
            await asyncio.sleep(0.05)

    limited = BodyLimits(app, limit_for=lambda path: 1000, timeout_s=0.3)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://t") as client:
        slow = await client.post("/x", content=trickle())
        assert slow.status_code == 408 and slow.headers["connection"] == "close"
        assert (await client.post("/x", content=b"x" * 999)).status_code == 200
        assert (await client.post("/x", content=b"x" * 1001)).status_code == 413


# --- against a real server process: what an attack costs it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int, Path]]:
    tmp = tmp_path_factory.mktemp("limits")
    (tmp / "tmpdir").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "CALL_STORE": f"sqlite:///{tmp}/calls.db",
        "TMPDIR": str(tmp / "tmpdir"),  # where Starlette's multipart parser would spool files
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_PHONE_NUMBER": "+15550001111",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
        "API_KEY": API_KEY,
        "ALLOWED_DESTINATIONS": "+1",
    }
    proc = subprocess.Popen([sys.executable, "-m", "all_in_one"], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    problem = wait_for_port(port, proc, 30)
    if problem:
        proc.kill()
        pytest.fail(f"all_in_one {problem}: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
    try:
        yield port, proc.pid, tmp / "tmpdir"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_huge_bodies_cost_the_server_no_memory_and_no_disk(server: tuple[int, int, Path], attack: str) -> None:
    port, pid, tmpdir = server
    path, headers, total, prefix = ATTACKS[attack]
    if path == "/make-call":
        headers = {**headers, "Authorization": f"Bearer {API_KEY}"}
    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)  # warm: imports and first-request allocations
    before = peak_rss_kib(pid)
    with DiskWatch(tmpdir, pid) as disk:
        outcome = chunked_upload(port, path, headers, total, prefix)
    grew_mib = (peak_rss_kib(pid) - before) / 1024
    assert outcome.status in (413, 415, None), outcome  # a precise 4xx, or closed on us: never a 5xx
    assert outcome.sent < 32 * 2**20, "the server kept reading"
    assert grew_mib < 8, f"peak RSS grew {grew_mib:.1f} MiB"
    assert disk.peak == 0 and list(tmpdir.iterdir()) == []  # no temp file, ever
    health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status_code == 200  # and it still serves


def test_deeply_nested_json_is_400_from_the_real_server(server: tuple[int, int, Path]) -> None:
    port, _, _ = server
    body = json.dumps({"destination_number": "+15551230000"}).encode()[:-1] + b', "metadata": ' + b"[" * 16_000
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"http://127.0.0.1:{port}/make-call", content=body + b"]" * 16_000 + b"}", headers=headers)
    assert r.status_code == 400
