"""An in-memory WebSocket pair with the parts of websockets' API our code and the stand-ins use.

`socket_pair()` gives two connected ends. Each end has `send`, `recv`, async iteration, `close(code, reason)`,
`wait_closed`, `close_code` / `close_reason`, and `request.headers` (for stand-ins reading upgrade headers). A
closed end raises websockets' own `ConnectionClosedOK` / `ConnectionClosedError`, exactly what the production
code expects from a real socket. Used to test the bridge without ports; the real-socket tests keep the wire honest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
from websockets.frames import Close

_CLOSED = object()


@dataclass
class _Request:
    headers: Mapping[str, str]


@dataclass(eq=False)
class MemorySocket:
    request: _Request
    _inbox: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    peer: MemorySocket | None = None
    close_code: int | None = None
    close_reason: str | None = None
    _closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: str | bytes, *, text: bool | None = None) -> None:
        if self._closed.is_set():
            raise self._error()
        assert self.peer is not None
        self.peer._inbox.put_nowait(message.decode() if text and isinstance(message, bytes) else message)
        await asyncio.sleep(0)  # a real send yields to the loop too

    async def recv(self) -> str | bytes:
        if self._closed.is_set() and self._inbox.empty():
            raise self._error()
        item = await self._inbox.get()
        if item is _CLOSED:
            self._inbox.put_nowait(_CLOSED)  # every later recv sees the close too
            raise self._error()
        assert isinstance(item, str | bytes)
        return item

    def __aiter__(self) -> MemorySocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed.is_set():
            return
        for end in (self, self.peer):
            assert end is not None
            end.close_code, end.close_reason = code, reason
            end._closed.set()
            end._inbox.put_nowait(_CLOSED)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _error(self) -> Exception:
        close = Close(self.close_code or 1006, self.close_reason or "")
        if close.code in (1000, 1001):
            return ConnectionClosedOK(close, close, True)
        return ConnectionClosedError(close, close, True)


def socket_pair(headers: Mapping[str, str] | None = None) -> tuple[MemorySocket, MemorySocket]:
    """(client end, server end); `headers` are what the server end sees as the upgrade's."""
    request = _Request(dict(headers or {}))
    client, server = MemorySocket(request), MemorySocket(request)
    client.peer, server.peer = server, client
    return client, server


class MemoryTwilioSocket:
    """The server end as the media node's TwilioSocket (what StarletteTwilioSocket is for uvicorn)."""

    def __init__(self, end: MemorySocket) -> None:
        self.end = end

    async def receive_frame(self) -> str | bytes | None:
        try:
            return await self.end.recv()
        except (ConnectionClosedOK, ConnectionClosedError):
            return None

    async def send(self, text: str) -> None:
        try:
            await self.end.send(text)
        except (ConnectionClosedOK, ConnectionClosedError):
            pass

    async def close(self, code: int, reason: str) -> None:
        await self.end.close(code, reason)
