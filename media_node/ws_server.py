"""The standalone media node's server (`python -m media_node`): the `websockets` library's own asyncio server.

The media node serves two WebSocket routes and two small GET routes, nothing else, so it does not need an ASGI
stack: a `websockets` server costs about 4 µs less per received frame than uvicorn + Starlette (measured on the
same machine, 50 sockets), and a call receives 50 frames a second. `/healthz` and `/metrics` are answered in
`process_request` before any upgrade; `/browser-stream` checks the Origin there too (403, no upgrade). The
all-in-one server keeps uvicorn (it also serves the control API on the same port) with the same routes in
app.py. SIGTERM drains exactly like there: /healthz 503, calls created after the drain began go elsewhere, calls
in progress finish up to DRAIN_GRACE_SECONDS, then exit; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from http import HTTPStatus

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from call_state import __version__ as VERSION
from call_state.settings import Settings
from media_node.node import MediaNode
from media_node.stream_handler import handle_stream

log = logging.getLogger(__name__)
ROUTES = {"/stream": False, "/browser-stream": True}  # path -> is it the console's browser route
MAX_FRAME_BYTES = 256 * 1024  # Twilio frames are ~330 bytes; a bigger frame closes that stream only (1009)


class WebsocketsTwilioSocket:
    """A `websockets` server connection as the call's TwilioSocket."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection

    async def receive_frame(self) -> str | bytes | None:
        try:
            return await self.connection.recv()
        except ConnectionClosed:
            return None

    async def send(self, text: str) -> None:
        try:
            await self.connection.send(text)
        except ConnectionClosed:
            pass

    async def close(self, code: int, reason: str) -> None:
        await self.connection.close(code, reason)  # idempotent; a closed connection returns at once


def _respond(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))), ("Connection", "close")])
    return Response(status, HTTPStatus(status).phrase, headers, body)


def request_handler(node: MediaNode) -> object:
    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path == "/healthz":
            status, body = node.health()
            return _respond(status, orjson.dumps({**body, "version": VERSION}), "application/json")
        if path == "/metrics":
            return _respond(200, node.metrics.render(), "text/plain; version=0.0.4")
        if path not in ROUTES:
            return _respond(404, b"not found\n", "text/plain")
        if ROUTES[path] and request.headers.get("Origin", "") not in node.console_origins:
            log.warning("browser stream refused at upgrade: Origin %r is not the console's",
                        request.headers.get("Origin", "")[:80])  # fmt: skip
            node.metrics.rejected.labels(reason="foreign_origin").inc()
            return _respond(403, b"origin not allowed\n", "text/plain")
        return None  # a WebSocket route: go on with the upgrade

    return process_request


async def _serve_socket(node: MediaNode, connection: ServerConnection) -> None:
    browser = ROUTES.get(connection.request.path.partition("?")[0] if connection.request else "", False)
    refusal = node.accept_socket()
    if refusal:
        log.warning("stream refused at upgrade: %s", refusal)
        node.metrics.rejected.labels(reason=refusal.replace(" ", "_")).inc()
        await connection.close(1013, refusal)
        return
    headers = connection.request.headers if connection.request else Headers()  # case-insensitive
    await handle_stream(node, WebsocketsTwilioSocket(connection), headers, browser)


async def serve_media_node(
    node: MediaNode, settings: Settings, *, sockets: list[object] | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serve until a signal (SIGTERM/SIGINT) and the drain that follows are over; or, given `stop` (tests),
    until it is set."""
    done = stop or asyncio.Event()
    draining: list[asyncio.Task[None]] = []

    async def drain() -> None:
        await node.wait_idle(settings.drain_grace_seconds)
        done.set()

    def on_signal(sig: signal.Signals) -> None:
        if node.draining:
            log.warning("second signal %s: exiting now", sig.name)
            done.set()
            return
        log.info("signal %s: draining up to %d s", sig.name, settings.drain_grace_seconds)
        node.start_drain()
        draining.append(asyncio.ensure_future(drain()))

    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, on_signal, sig)
    options = {"sock": sockets[0]} if sockets else {"host": settings.host, "port": settings.port}
    async with (
        node.running(),
        serve(
            lambda connection: _serve_socket(node, connection),
            process_request=request_handler(node),  # type: ignore[arg-type]
            compression=None,  # audio does not compress; deflate only costs CPU
            max_size=MAX_FRAME_BYTES,
            max_queue=64,
            open_timeout=10,  # the whole HTTP upgrade (a half-sent request is dropped after it)
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
            server_header=None,
            **options,  # type: ignore[arg-type]
        ) as server,
    ):
        log.info("media node on %s (websockets server)", ", ".join(str(s.getsockname()) for s in server.sockets))
        try:
            await done.wait()
        finally:
            for task in draining:
                task.cancel()
            server.close(close_connections=True)
            await server.wait_closed()
