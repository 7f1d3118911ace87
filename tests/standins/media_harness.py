"""Run the real media node app (uvicorn, real sockets on 127.0.0.1) against the stand-ins, for tests."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from call_state.record import AgentSettings, CallRecord, Direction
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from media_node.app import create_media_app
from media_node.node import MediaNode
from media_node.server import DrainingServer, uvicorn_config
from tests.standins.twilio_caller import TwilioCaller

SECRET = "test-stream-secret-not-real-0123456789"
ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token-not-real"


@dataclass
class TwilioRestRecorder:
    """A fake Twilio REST API as an httpx transport: records each request, answers 200."""

    requests: list[tuple[str, str]] = field(default_factory=list)

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            self.requests.append((request.url.path, request.content.decode()))
            return httpx.Response(200, json={"sid": "CA" + "0" * 32, "status": "completed"})

        return httpx.MockTransport(answer)

    @property
    def hangups(self) -> list[str]:
        return [path for path, body in self.requests if "Status=completed" in body]


@dataclass
class MediaHarness:
    settings: Settings
    store: SqliteCallStore
    node: MediaNode
    url: str
    http: str
    rest: TwilioRestRecorder
    tokens: StreamTokens = field(default_factory=lambda: StreamTokens(SECRET.encode()))

    def new_call(
        self, call_id: str, direction: Direction = Direction.OUTBOUND, *, n: int = 0, **agent: Any
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
            call_sid="" if direction is Direction.BROWSER else f"CA{n:032d}",
        )
        self.store.create_call(record)
        return record

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.http) as client:
            return await client.get(path)

    async def calls_done(self, timeout: float = 10.0) -> None:
        """Wait until the node has finished every call and written what it had to."""
        async with asyncio.timeout(timeout):
            while self.node.active_calls:
                await asyncio.sleep(0.02)
        await self.node.writer.flush()

    def caller(
        self, call_id: str, *, token: str | None = None, n: int = 0, browser_origin: str | None = None
    ) -> TwilioCaller:
        """A phone caller on /stream, or (with `browser_origin`) a console page on /browser-stream."""
        return TwilioCaller(
            self.url if browser_origin is None else self.url.replace("/stream", "/browser-stream"),
            origin=browser_origin,
            call_id=call_id,
            token=self.tokens.mint(call_id, time.time()) if token is None else token,
            stream_sid=f"MZ{n:032d}",
            call_sid=f"CA{n:032d}",
            account_sid=ACCOUNT_SID,
        )


@asynccontextmanager
async def media_node(gemini_url: str, tmp_path: Any, **overrides: Any) -> AsyncIterator[MediaHarness]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = replace(
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
    store = SqliteCallStore(str(tmp_path / "calls.db"))
    rest = TwilioRestRecorder()
    twilio = TwilioRestClient(ACCOUNT_SID, AUTH_TOKEN, "http://127.0.0.1:9", transport=rest.transport())
    app = create_media_app(settings, store, twilio=twilio)
    node: MediaNode = app.state.node
    server = DrainingServer(uvicorn_config(app, settings), node, settings.drain_grace_seconds)
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield MediaHarness(settings, store, node, f"ws://127.0.0.1:{port}/stream", f"http://127.0.0.1:{port}", rest)
    finally:
        server.should_exit = True  # graceful: open sockets are closed, calls end, the node's lifespan flushes
        await asyncio.wait_for(task, 10)  # the app's lifespan flushed the node's store writes
        store.close()
