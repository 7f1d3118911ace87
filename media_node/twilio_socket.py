"""The Twilio side's socket as the call sees it, and its Starlette adapter.

`TwilioSocket` is all a call needs: receive a frame (None once the socket is closed), send a text frame, close.
Every end of a socket is an ordinary event, never an exception: Twilio closes right after `stop`, a client may
vanish mid-frame, and our own `close()` on an already closed socket is a no-op. Tests use an in-memory socket.
"""

from __future__ import annotations

from typing import Protocol

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState


class TwilioSocket(Protocol):
    async def receive_frame(self) -> str | bytes | None: ...  # None: the socket closed
    async def send(self, text: str) -> None: ...  # a closed socket swallows the frame
    async def close(self, code: int, reason: str) -> None: ...  # idempotent


class StarletteTwilioSocket:
    """Starlette's WebSocket (served by uvicorn) as a TwilioSocket."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.closed = False

    async def receive_frame(self) -> str | bytes | None:
        if self.closed:
            return None
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True
            return None
        if message["type"] == "websocket.disconnect":
            self.closed = True
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def send(self, text: str) -> None:
        if self.closed:
            return
        try:
            await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.closed = True

    async def close(self, code: int, reason: str) -> None:
        if self.closed or WebSocketState.DISCONNECTED in (self.ws.application_state, self.ws.client_state):
            self.closed = True
            return
        self.closed = True
        try:
            await self.ws.close(code, reason)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the peer went first: that is how most calls end
