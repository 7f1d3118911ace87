"""One WebSocket to Gemini Live: connect, `setup`, wait for `setupComplete`, then read frames into the call's inbox.

Each `GeminiConnection` has its own codec (`GeminiSession`), so its own resumption handle: during a goAway switch
a late `sessionResumptionUpdate` from the old socket can only change the old connection's handle. The reader task
runs in the call's task scope and is cancelled by `close()`. How the socket is made is injected (`GeminiConnector`):
`WebSocketConnector` for Google (and the loopback stand-in), an in-memory connector in tests.
Failures become `GeminiUnavailable` with the reason a human needs (never the API key).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import websockets
from websockets.asyncio.client import connect

from media_node.gemini_session import GeminiEvent, GeminiSession, Malformed, SetupComplete
from media_node.task_scope import TaskScope

SETUP_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0  # a Gemini that does not answer our close must not hold the call's teardown
MAX_FRAME_BYTES = 8 * 1024 * 1024
INBOX_FRAMES = 256  # frames read ahead of the bridge; beyond it the reader waits (backpressure)


class GeminiUnavailable(Exception):
    """Gemini could not be reached or refused the session; the message says why."""


class GeminiSocket(Protocol):
    """What we need of a WebSocket (websockets' ClientConnection has it); a close raises ConnectionClosed."""

    async def send(self, message: str | bytes, *, text: bool | None = None) -> None: ...
    async def recv(self) -> str | bytes: ...
    async def close(self) -> None: ...


class GeminiConnector(Protocol):
    async def __call__(self) -> GeminiSocket: ...


class WebSocketConnector:
    """The real thing: `GEMINI_LIVE_URL` with the key in a header (never in the URL, so never in a log)."""

    def __init__(self, url: str, api_key: str) -> None:
        self.url, self._headers = url, {"x-goog-api-key": api_key}

    async def __call__(self) -> GeminiSocket:
        try:
            socket: GeminiSocket = await connect(
                self.url,
                additional_headers=self._headers,
                compression=None,  # audio does not compress; deflate only costs CPU
                max_size=MAX_FRAME_BYTES,
                open_timeout=SETUP_TIMEOUT_S,
                ping_interval=20,
                ping_timeout=20,
                close_timeout=CLOSE_TIMEOUT_S,
            )
        except websockets.InvalidStatus as exc:
            raise GeminiUnavailable(f"Gemini refused the connection: HTTP {exc.response.status_code}") from exc
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise GeminiUnavailable(f"Gemini unreachable: {type(exc).__name__}: {str(exc)[:200]}") from exc
        return socket


@dataclass(frozen=True)
class Delivery:
    """What a connection's reader hands the call: the events of one frame, or (events None) that it closed."""

    connection: GeminiConnection
    events: list[GeminiEvent] | None
    closed_reason: str = ""


@dataclass(eq=False)
class GeminiConnection:
    socket: GeminiSocket
    codec: GeminiSession
    connect_seconds: float
    replying: bool = False  # between the first audio of a reply and its turnComplete/interrupted
    _reader: asyncio.Task[None] | None = field(default=None, repr=False)
    _closed: bool = False

    @classmethod
    async def open(
        cls,
        connector: GeminiConnector,
        codec: GeminiSession,
        setup_frame: str,
        inbox: asyncio.Queue[Delivery],
        scope: TaskScope,
    ) -> GeminiConnection:
        """Connect, set up, start reading. Raises GeminiUnavailable; a cancelled open leaves no socket."""
        started = time.monotonic()
        socket = await connector()
        try:
            early = await _set_up(socket, codec, setup_frame)
        except BaseException:
            await _close_quietly(socket)
            raise
        connection = cls(socket, codec, time.monotonic() - started)
        if early:
            inbox.put_nowait(Delivery(connection, early))
        connection._reader = scope.spawn(connection._read(inbox), name="gemini-reader")
        return connection

    async def send(self, frame: str | bytes) -> bool:
        """A text frame (bytes are sent as UTF-8 text without a decode); False when the socket has closed."""
        if self._closed:
            return False
        try:
            await self.socket.send(frame, text=True)
        except websockets.ConnectionClosed:
            return False
        return True

    async def _read(self, inbox: asyncio.Queue[Delivery]) -> None:
        try:
            while True:
                events = self.codec.receive(await self.socket.recv())
                await inbox.put(Delivery(self, events))
        except websockets.ConnectionClosed as exc:
            if not self._closed:
                await inbox.put(Delivery(self, None, close_reason(exc)))

    async def close(self) -> None:
        """Stop reading and close the socket (bounded); closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._reader is not None and self._reader is not asyncio.current_task():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await _close_quietly(self.socket)


async def _set_up(socket: GeminiSocket, codec: GeminiSession, setup_frame: str) -> list[GeminiEvent]:
    try:
        await socket.send(setup_frame)
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            while True:
                events = codec.receive(await socket.recv())
                bad = [e for e in events if isinstance(e, Malformed)]
                if bad:
                    raise GeminiUnavailable(f"Gemini answered setup with {bad[0].reason}")
                if codec.setup_complete:  # anything that came in the same frame is for the call
                    return [e for e in events if not isinstance(e, SetupComplete)]
    except websockets.ConnectionClosed as exc:
        raise GeminiUnavailable(f"Gemini closed the session during setup: {close_reason(exc)}") from exc
    except TimeoutError as exc:
        raise GeminiUnavailable(f"Gemini sent no setupComplete within {SETUP_TIMEOUT_S:.0f} s") from exc


async def _close_quietly(socket: GeminiSocket) -> None:
    """Close, reading (and dropping) whatever still arrives: a socket nobody reads stops reading at its queue
    limit and would never see the peer's close frame, so the handshake would always run into the timeout."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S + 1), asyncio.TaskGroup() as group:
            group.create_task(_drain(socket))
            await socket.close()
    except (TimeoutError, OSError, websockets.WebSocketException):
        pass


async def _drain(socket: GeminiSocket) -> None:
    try:
        while True:
            await socket.recv()
    except websockets.ConnectionClosed:
        return


def close_reason(exc: websockets.ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "1006 connection lost (no close frame)"
    return f"{exc.rcvd.code} {exc.rcvd.reason[:200]}".strip()
