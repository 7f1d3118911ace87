"""Run the real media node app (uvicorn, real sockets on 127.0.0.1) against the stand-ins, for tests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

import httpx

from call_state.agent_actions import CallActions
from call_state.record import AgentSettings, CallRecord, Direction
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from media_node.app import create_media_app
from media_node.node import MediaNode
from media_node.server import DrainingServer, uvicorn_config
from media_node.stream_handler import handle_stream
from media_node.ws_server import serve_media_node
from tests.standins.gemini_server import GeminiStandIn
from tests.standins.memory_socket import MemorySocket, MemoryTwilioSocket, socket_pair
from tests.standins.twilio_caller import TwilioCaller

SECRET = "test-stream-secret-not-real-0123456789"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-not-real"


@dataclass
class TwilioRestRecorder:
    """A fake Twilio REST API as an httpx transport: records each request, answers 200 (or `refuse` with Twilio's
    error body, like a call that cannot be updated any more)."""

    requests: list[tuple[str, str]] = field(default_factory=list)
    refuse: tuple[int, int, str] | None = None  # (HTTP status, Twilio code, message)

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append((request.url.path, request.content.decode()))
            if self.refuse is not None:
                status, code, message = self.refuse
                return httpx.Response(status, json={"code": code, "message": message, "status": status})
            return httpx.Response(200, json={"sid": "CA" + "0" * 32, "status": "completed"})

        return httpx.MockTransport(answer)

    @property
    def hangups(self) -> list[str]:
        return [path for path, body in self.requests if "Status=completed" in body]

    @property
    def updates(self) -> list[dict[str, list[str]]]:
        """The forms of every call update (e.g. a transfer's Twiml)."""
        return [parse_qs(body) for _, body in self.requests]


Dial = Callable[[dict[str, str], bool], Awaitable[Any]]  # (upgrade headers, browser) -> the caller's socket end


@dataclass
class MediaHarness:
    settings: Settings
    store: CallStore
    node: MediaNode
    url: str
    http: str
    rest: TwilioRestRecorder
    tokens: StreamTokens = field(default_factory=lambda: StreamTokens(SECRET.encode()))
    dial: Dial | None = None  # set by memory_media_node: callers reach the node without a port

    def new_call(
        self,
        call_id: str,
        direction: Direction = Direction.OUTBOUND,
        *,
        n: int = 0,
        call_sid: str | None = None,
        actions: CallActions | None = None,
        **agent: Any,
    ) -> CallRecord:
        """A call as the control plane stores it; a phone call's SID is the one `caller(n=n)` sends."""
        now = time.time()
        record = CallRecord(
            call_id=call_id,
            direction=direction,
            to="+15551230000",
            from_="+15559870000",
            agent=AgentSettings(
                agent.get("system_prompt", "You are a test agent."),
                agent.get("greeting", "Greet the caller."),
                agent.get("voice", "Kore"),
                agent.get("language", "en-US"),
            ),
            created_at=now,
            expires_at=int(now) + 3600,
            call_sid=call_sid if call_sid is not None else "" if direction is Direction.BROWSER else f"CA{n:032d}",
            actions=actions or CallActions(),
        )
        self.store.create_call(record)
        return record

    def metric(self, name: str) -> float:
        """One sample of the node's /metrics (0 when it has not been counted yet), e.g. 'voice_calls_total{...}'."""
        for line in self.node.metrics.render().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http) as client:
            return await client.get(path)

    async def calls_done(self, timeout: float = 10.0) -> None:
        """Wait until the node has finished every call and written what it had to."""
        assert await self.node.wait_idle(timeout), "calls still active"

    def caller(
        self, call_id: str, *, token: str | None = None, n: int = 0, browser_origin: str | None = None
    ) -> TwilioCaller:
        """A phone caller on /stream, or (with `browser_origin`) a console page on /browser-stream."""
        dial = self.dial
        return TwilioCaller(
            self.url if browser_origin is None else self.url.replace("/stream", "/browser-stream"),
            origin=browser_origin,
            dialer=None if dial is None else lambda headers: dial(headers, browser_origin is not None),
            call_id=call_id,
            token=self.tokens.mint(call_id, time.time()) if token is None else token,
            stream_sid=f"MZ{n:032d}",
            call_sid=f"CA{n:032d}",
            account_sid=ACCOUNT_SID,
        )


def harness_settings(gemini_url: str, port: int, **overrides: Any) -> Settings:
    return replace(
        Settings.from_env({}),
        gemini_live_url=gemini_url,
        gemini_api_key="test-gemini-key-not-real",
        stream_token_secret=SECRET,
        twilio_account_sid=ACCOUNT_SID,
        media_stream_url=f"ws://127.0.0.1:{port}/stream",
        host="127.0.0.1",
        port=port,
        **overrides,
    )


def recorded_twilio() -> tuple[TwilioRestRecorder, TwilioRestClient]:
    rest = TwilioRestRecorder()
    return rest, TwilioRestClient(ACCOUNT_SID, AUTH_TOKEN, "http://127.0.0.1:9", transport=rest.transport())


@asynccontextmanager
async def memory_media_node(
    gemini: GeminiStandIn, tmp_path: Any, *, store: CallStore | None = None, **overrides: Any
) -> AsyncIterator[MediaHarness]:
    """The media node without ports: callers and Gemini reach it through in-memory sockets."""
    settings = harness_settings("ws://in-memory.invalid/gemini", 8080, **overrides)
    store = store or SqliteCallStore(str(tmp_path / "calls.db"))
    rest, twilio = recorded_twilio()
    node = MediaNode(settings, store, twilio, connector=gemini.connector(), node_id="memory-node")
    handlers: set[asyncio.Task[str]] = set()

    async def dial(headers: dict[str, str], browser: bool) -> MemorySocket:
        client, server = socket_pair(headers)
        if node.accept_socket() is not None:
            await server.close(1013, "refused at upgrade")
        else:
            handlers.add(asyncio.create_task(handle_stream(node, MemoryTwilioSocket(server), headers, browser)))
        return client

    async with node.running():
        try:
            yield MediaHarness(settings, store, node, "memory://stream", "", rest, dial=dial)
        finally:
            _, pending = await asyncio.wait(handlers, timeout=10) if handlers else (set(), set())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    store.close()


@asynccontextmanager
async def media_node(
    gemini_url: str, tmp_path: Any, *, server: str = "websockets", **overrides: Any
) -> AsyncIterator[MediaHarness]:
    """The real media node on a loopback port: `python -m media_node`'s websockets server, or (`server="uvicorn"`)
    the ASGI app the all-in-one server mounts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = harness_settings(gemini_url, port, **overrides)
    store = SqliteCallStore(str(tmp_path / "calls.db"))
    rest, twilio = recorded_twilio()
    if server == "websockets":
        node = MediaNode(settings, store, twilio)
        stop = asyncio.Event()
        task = asyncio.create_task(serve_media_node(node, settings, sockets=[sock], stop=stop))
        await _until_listening(port)
        try:
            yield MediaHarness(settings, store, node, f"ws://127.0.0.1:{port}/stream", f"http://127.0.0.1:{port}", rest)
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)
            store.close()
        return
    app = create_media_app(settings, store, twilio=twilio)
    node = app.state.node
    uvicorn_server = DrainingServer(uvicorn_config(app, settings), node, settings.drain_grace_seconds)
    uvicorn_server.config.log_level = "warning"
    task = asyncio.create_task(uvicorn_server.serve(sockets=[sock]))
    while not uvicorn_server.started:
        await asyncio.sleep(0.01)
    try:
        yield MediaHarness(settings, store, node, f"ws://127.0.0.1:{port}/stream", f"http://127.0.0.1:{port}", rest)
    finally:
        uvicorn_server.should_exit = True  # graceful: open sockets are closed, calls end, the lifespan flushes
        await asyncio.wait_for(task, 10)
        store.close()


async def _until_listening(port: int) -> None:
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            writer.close()
            return
