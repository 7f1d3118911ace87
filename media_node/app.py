"""The media node as an ASGI app: WS /stream, GET /healthz, GET /metrics (Starlette, served by uvicorn)."""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from call_state import __version__ as VERSION
from call_state.async_store import AsyncCallStore
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.twilio_rest import TwilioRestClient
from media_node.bridge import CallBridge
from media_node.node import MediaNode

log = logging.getLogger(__name__)


class StarletteTwilioSocket:
    """Adapts Starlette's WebSocket to the bridge's TwilioSocket; closing twice is harmless."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.closed = False

    async def receive_frame(self) -> str | bytes | None:
        if self.closed:
            return None
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, text: str) -> None:
        if not self.closed:
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed or self.ws.application_state == WebSocketState.DISCONNECTED:
            self.closed = True
            return
        self.closed = True
        try:
            await self.ws.close(code, reason)
        except (RuntimeError, OSError):
            pass


def media_routes(node: MediaNode) -> list[Route | WebSocketRoute]:
    async def stream(ws: WebSocket) -> None:
        await _bridge(ws, browser=False)

    async def browser_stream(ws: WebSocket) -> None:
        origin = ws.headers.get("origin", "")
        if origin not in node.console_origins:  # cross-site WebSocket hijacking: only the console may open it
            log.warning("browser stream refused at upgrade: Origin %r is not the console's", origin[:80])
            node.metrics.rejected.labels(reason="foreign origin").inc()
            await ws.close(1008, "origin not allowed")  # before accept: the upgrade is answered 403
            return
        await _bridge(ws, browser=True)

    async def _bridge(ws: WebSocket, browser: bool) -> None:
        refusal = node.admit()
        if refusal:
            log.warning("stream refused at upgrade: %s", refusal)
            node.metrics.rejected.labels(reason=refusal).inc()
            await ws.close(1013, refusal)  # before accept: the upgrade is answered 403
            return
        await ws.accept()
        node.call_started()
        outcome = "error"
        try:
            outcome = await CallBridge(node, StarletteTwilioSocket(ws), browser=browser).run(dict(ws.headers))
        except Exception:
            log.exception("stream handler crashed")
            raise
        finally:
            node.call_ended(outcome)

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


def create_media_app(
    settings: Settings, store: CallStore | AsyncCallStore, *, twilio: TwilioRestClient | None = None
) -> Starlette:
    node = MediaNode(settings, store, twilio)
    app = Starlette(routes=media_routes(node))
    app.state.node = node
    return app
