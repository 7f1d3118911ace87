"""The uvicorn server of `make run` and `python -m media_node` without Nginx in front: slow clients are closed.

A real uvicorn server (our `uvicorn_config`, so our protocol guard) on 127.0.0.1, raw sockets as the clients.
Timeouts are shortened through Settings so the test runs in seconds; the defaults are 10 s and 5 s.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from call_state.settings import Settings
from media_node.server import ClosedTally, uvicorn_config

HEAD_TIMEOUT = 1
KEEPALIVE = 1


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    async for text in ws.iter_text():
        await ws.send_text(text)


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, ClosedTally]]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = replace(Settings.from_env({}), host="127.0.0.1", port=port, http_header_timeout_seconds=HEAD_TIMEOUT,
                       http_keepalive_timeout_seconds=KEEPALIVE, max_connections=300)  # fmt: skip
    app = Starlette(routes=[Route("/hello", hello), WebSocketRoute("/ws", echo)])
    tally = ClosedTally()
    server = uvicorn.Server(uvicorn_config(app, settings, tally))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield port, tally
    finally:
        server.should_exit = True
        await task


async def connect(port: int, data: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if data:
        writer.write(data)
        await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection (EOF or reset) within `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def get(port: int) -> bytes:
    reader, writer = await connect(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data


async def test_half_sent_headers_are_closed_at_the_deadline(server: tuple[int, ClosedTally]) -> None:
    port, tally = server
    slow = [await connect(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(250)]
    silent = [await connect(port) for _ in range(20)]  # connected, never a byte
    assert (await get(port)).startswith(b"HTTP/1.1 200")  # real clients are served meanwhile
    started = time.monotonic()
    results = await asyncio.gather(*[closed_within(r, HEAD_TIMEOUT + 3) for r, _ in slow + silent])
    assert all(results) and time.monotonic() - started < HEAD_TIMEOUT + 3
    assert tally.closed[f"no complete request head within {HEAD_TIMEOUT} s"] == 270
    for _, writer in slow + silent:
        writer.close()


async def test_a_slow_but_complete_head_is_served(server: tuple[int, ClosedTally]) -> None:
    port, _ = server
    reader, writer = await connect(port)
    for part in (b"GET /hello HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n", b"\r\n"):
        writer.write(part)
        await writer.drain()
        await asyncio.sleep(HEAD_TIMEOUT / 5)
    assert (await reader.read()).startswith(b"HTTP/1.1 200")


async def test_keep_alive_then_a_stalled_second_head(server: tuple[int, ClosedTally]) -> None:
    port, _ = server
    reader, writer = await connect(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    writer.write(b"GET /hello HTTP/1.1\r\nHost:")  # the next request starts, then stalls
    await writer.drain()
    assert await closed_within(reader, HEAD_TIMEOUT + 2)
    reader, writer = await connect(port, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"ok")
    assert await closed_within(reader, KEEPALIVE + 2)  # an idle keep-alive connection is closed too


async def test_websockets_outlive_the_head_deadline(server: tuple[int, ClosedTally]) -> None:
    port, _ = server
    async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await asyncio.sleep(HEAD_TIMEOUT + 0.5)
        await ws.send("still here")
        assert await ws.recv() == "still here"


async def test_connections_over_the_cap_are_closed_at_once(server: tuple[int, ClosedTally]) -> None:
    port, tally = server
    held = [await connect(port) for _ in range(300)]
    await asyncio.sleep(0.1)
    extra = [await connect(port) for _ in range(20)]
    assert all(await asyncio.gather(*[closed_within(r, 0.5) for r, _ in extra]))
    assert tally.closed["over MAX_CONNECTIONS=300"] == 20
    for _, writer in held + extra:
        writer.close()
    await asyncio.sleep(0.2)
    assert (await get(port)).startswith(b"HTTP/1.1 200")  # room again once they are gone


def test_the_cap_sits_above_the_media_nodes_pending_sockets() -> None:
    s = Settings.from_env({"MAX_CONCURRENT_CALLS": "300"})
    assert s.max_connections == 300 + 2000 + 500
    assert (s.http_header_timeout_seconds, s.http_keepalive_timeout_seconds) == (10, 5)
    with pytest.raises(ValueError, match="MAX_CONNECTIONS must be above MAX_CONCURRENT_CALLS"):
        Settings.from_env({"MAX_CONCURRENT_CALLS": "300", "MAX_CONNECTIONS": "2200"})
    with pytest.raises(ValueError, match="HTTP_HEADER_TIMEOUT_SECONDS must be an integer 1-10"):
        Settings.from_env({"HTTP_HEADER_TIMEOUT_SECONDS": "30"})
