"""The media node as an ASGI app: WS /stream (Twilio), WS /browser-stream (the console), /healthz, /metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from call_state import __version__ as VERSION
from call_state.async_store import AsyncCallStore
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.twilio_rest import TwilioRestClient
from media_node.gemini_connection import GeminiConnector
from media_node.node import MediaNode
from media_node.stream_handler import handle_stream
from media_node.twilio_socket import StarletteTwilioSocket

log = logging.getLogger(__name__)


def media_routes(node: MediaNode) -> list[Route | WebSocketRoute]:
    async def stream(ws: WebSocket) -> None:
        await _serve(ws, browser=False)

    async def browser_stream(ws: WebSocket) -> None:
        origin = ws.headers.get("origin", "")
        if origin not in node.console_origins:  # cross-site WebSocket hijacking: only the console may open it
            log.warning("browser stream refused at upgrade: Origin %r is not the console's", origin[:80])
            node.metrics.rejected.labels(reason="foreign_origin").inc()
            await ws.close(1008, "origin not allowed")  # before accept: the upgrade is answered 403
            return
        await _serve(ws, browser=True)

    async def _serve(ws: WebSocket, browser: bool) -> None:
        refusal = node.accept_socket()
        if refusal:
            log.warning("stream refused at upgrade: %s", refusal)
            node.metrics.rejected.labels(reason=refusal.replace(" ", "_")).inc()
            await ws.close(1013, refusal)  # before accept: the upgrade is answered 403
            return
        await ws.accept()
        await handle_stream(node, StarletteTwilioSocket(ws), ws.headers, browser)

    async def healthz(request: Request) -> Response:
        status, body = node.health()
        return JSONResponse({**body, "version": VERSION}, status_code=status)

    async def metrics(request: Request) -> Response:
        return Response(node.metrics.render(), media_type="text/plain; version=0.0.4")

    return [
        WebSocketRoute("/stream", stream),
        WebSocketRoute("/browser-stream", browser_stream),
        Route("/healthz", healthz),
        Route("/metrics", metrics),
    ]


def node_lifespan(node: MediaNode) -> object:
    """Starlette lifespan: the node's background work runs while the server does."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with node.running():
            yield

    return lifespan


def create_media_app(
    settings: Settings,
    store: CallStore | AsyncCallStore,
    *,
    twilio: TwilioRestClient | None = None,
    connector: GeminiConnector | None = None,
) -> Starlette:
    node = MediaNode(settings, store, twilio, connector)
    app = Starlette(routes=media_routes(node), lifespan=node_lifespan(node))  # type: ignore[arg-type]
    app.state.node = node
    return app
