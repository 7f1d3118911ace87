"""The all-in-one app (control API + media node in one process): one /healthz, the node's drain seen at once.

`all_in_one.build_app` with the real MediaNode over ASGI, the loopback Twilio REST stand-in, SQLite.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from all_in_one import build_app
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from media_node.node import MediaNode
from media_node.server import DrainingServer, uvicorn_config
from tests.control_helpers import make_call, settings_for, signed
from tests.standins.receiver import Receiver
from tests.standins.twilio_rest import TwilioRestStandIn
from tests.test_store_contract import make_record


@asynccontextmanager
async def all_in_one(
    twilio: TwilioRestStandIn, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, MediaNode]]:
    app, node = build_app(settings_for(twilio, **overrides), SqliteCallStore(str(tmp_path / "calls.db")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client, node


async def test_one_healthz_for_both_planes(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    async with all_in_one(twilio, tmp_path) as (api, node):
        ok = await api.get("/healthz")
        assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["active_calls"] == 0
        node.start_drain()
        draining = await api.get("/healthz")
        assert draining.status_code == 503 and draining.json()["status"] == "draining"  # the media node's rule
    async with all_in_one(twilio, tmp_path, gemini_api_key="") as (api, _):
        health = await api.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "not_configured"
        assert "GEMINI" not in health.text and "missing" not in health.text  # public: names no credential


async def test_after_sigterm_no_call_is_dialled(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    async with all_in_one(twilio, tmp_path) as (api, node):
        assert (await make_call(api)).status_code == 201
        node.start_drain()  # what the first SIGTERM does
        r = await make_call(api)
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining" and "Retry-After" in r.headers
    assert twilio.dials == 1


async def test_no_gemini_key_is_503_naming_it(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    async with all_in_one(twilio, tmp_path, gemini_api_key="") as (api, _):
        r = await make_call(api)
        assert r.status_code == 503 and "GEMINI_API_KEY" in r.json()["error"]["message"]
    assert twilio.dials == 0


async def test_never_more_calls_than_the_node_takes(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    async with all_in_one(twilio, tmp_path, max_concurrent_calls=2) as (api, _):
        codes = [(await make_call(api)).status_code for _ in range(3)]
    assert codes == [201, 201, 503] and twilio.dials == 2


async def test_the_store_sweep_runs_while_the_server_does(tmp_path: Path) -> None:
    settings = replace(Settings.from_env({}), host="127.0.0.1")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    settings = replace(settings, port=sock.getsockname()[1])
    store = SqliteCallStore(str(tmp_path / "calls.db"))
    store.create_call(make_record("expired-long-ago", created_at=1_000_000.0, ttl=10))
    app, node = build_app(settings, store)
    server = DrainingServer(uvicorn_config(app, settings), node, 1)
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(5):  # the first sweep runs at start
            while store.list_calls(0).calls:
                await asyncio.sleep(0.02)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)  # the lifespan ends the sweep task with the server


async def test_the_server_delivers_end_of_call_webhooks_at_once(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    secret = "test-webhook-secret-not-real-0123"
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    with Receiver(secret.encode()) as receiver:
        settings = settings_for(twilio, webhook_secret=secret, webhook_allowed_hosts=frozenset({"127.0.0.1"}),
                                port=sock.getsockname()[1])  # fmt: skip
        app, node = build_app(settings, SqliteCallStore(str(tmp_path / "calls.db")))
        server = DrainingServer(uvicorn_config(app, settings), node, 1)
        server.config.log_level = "warning"
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}") as api:
                async with asyncio.timeout(10):
                    while not server.started:
                        await asyncio.sleep(0.01)
                body = {"destination_number": "+15551230000", "webhook_url": receiver.url("/events")}
                placed = (await make_call(api, body)).json()
                path, form = f"/status/{placed['call_id']}", {"CallSid": placed["call_sid"], "CallStatus": "busy"}
                ended = time.time()
                assert (await api.post(path, **signed(path, form))).status_code == 204
                (sent,) = await asyncio.to_thread(receiver.wait_for, 1, "/events", 5)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)  # the lifespan ends the worker with the server
    assert sent.signature_ok and sent.json["call"]["status"] == "busy"
    assert sent.at - ended < 0.5  # the worker is woken by the enqueue, not left to its next look
