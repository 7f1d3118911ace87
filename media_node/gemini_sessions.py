"""The Gemini side of one call: the current Live connection, the switch to the next one, recovery.

- `start()` opens the first session and sends the greeting (the agent speaks first, once per call).
- Caller audio goes to the current connection; while there is none (connecting, recovering) up to 1 s of it is
  kept and sent, in order, once a connection is ready.
- `goAway`: the next connection opens in the background with the current one's resumption handle while the old
  one keeps working; once it is ready it becomes current, and the old one is let go when its reply has ended.
- An unexpected close: resume with the handle, else start fresh with the transcript so far; if both fail,
  `next_events()` raises `GeminiUnavailable` and the call fails.
- Tool responses go back to the connection that asked (it may be the old one during a switch).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from call_state.record import TranscriptTurn
from media_node.call_context import CallContext
from media_node.gemini_connection import INBOX_FRAMES, Delivery, GeminiConnection, GeminiConnector, GeminiUnavailable
from media_node.gemini_session import (
    AgentAudio,
    GeminiEvent,
    GeminiSession,
    GoAway,
    Interrupted,
    OutputTranscript,
    ToolCall,
    TurnComplete,
)
from media_node.task_scope import TaskScope

UNSENT_FRAMES = 50  # 1 s of 20 ms caller frames kept while no session is ready; older ones are dropped


class GeminiSessions:
    def __init__(
        self,
        connector: GeminiConnector,
        new_codec: Callable[[], GeminiSession],
        greeting: str,
        history: Callable[[], tuple[TranscriptTurn, ...]],
        scope: TaskScope,
        ctx: CallContext,
    ) -> None:
        self._connector, self._new_codec, self._greeting = connector, new_codec, greeting
        self._history, self._scope, self._ctx = history, scope, ctx
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue(INBOX_FRAMES)
        self.current: GeminiConnection | None = None
        self.previous: GeminiConnection | None = None  # switched away from, finishing its reply
        self._unsent: deque[bytes] = deque(maxlen=UNSENT_FRAMES)
        self._tool_calls: dict[str, GeminiConnection] = {}
        self._switching = False
        self._closed = False
        self.reconnects = 0

    async def start(self) -> None:
        """Open the first session and greet. Raises GeminiUnavailable."""
        connection = await self._open(None, ())
        await self._adopt(connection, greet=True)

    # --- what the bridge sends ------------------------------------------------------------------------------
    async def send_audio(self, pcm16k: bytes) -> None:
        connection = self.current
        if connection is None or self._unsent:  # no session yet, or older audio still waiting: keep the order
            self._unsent.append(pcm16k)
            return
        if not await connection.send(connection.codec.audio(pcm16k)):
            self._unsent.append(pcm16k)  # the reader reports the close; recovery sends this

    async def send_text(self, text: str) -> bool:
        connection = self.current
        return connection is not None and await connection.send(connection.codec.text(text))

    async def send_tool_response(
        self, call_id: str, name: str, response: dict[str, object], scheduling: str | None = None
    ) -> bool:
        connection = self._tool_calls.pop(call_id, None) or self.current
        if connection is None:
            return False
        return await connection.send(connection.codec.tool_response(call_id, name, response, scheduling))

    @property
    def replying(self) -> bool:
        """Gemini is in the middle of a reply (on the current or the previous connection)."""
        return any(c is not None and c.replying for c in (self.current, self.previous))

    # --- what the bridge receives ---------------------------------------------------------------------------
    async def next_events(self) -> list[GeminiEvent]:
        """The events of the next frame from a connection that still counts. Raises GeminiUnavailable."""
        while True:
            delivery = await self._inbox.get()
            connection = delivery.connection
            if connection is not self.current and connection is not self.previous:
                continue  # a socket we already let go
            if delivery.events is None:
                if connection is self.previous:
                    self.previous = None
                else:
                    await self._recover(delivery.closed_reason)
                continue
            events = [e for e in delivery.events if self._note(connection, e)]
            if connection is self.previous and not connection.replying:
                self.previous = None  # the old session finished its reply: let it go
                await connection.close()
            if events:
                return events

    def _note(self, connection: GeminiConnection, event: GeminiEvent) -> bool:
        """Track a connection's state from its events; False for events that are ours, not the bridge's."""
        if isinstance(event, AgentAudio | OutputTranscript):
            connection.replying = True
        elif isinstance(event, TurnComplete | Interrupted):
            connection.replying = False
        elif isinstance(event, ToolCall):
            self._tool_calls[event.call_id] = connection
        elif isinstance(event, GoAway):
            if connection is self.current and not self._switching:
                self._ctx.log.info("Gemini goAway (%.0f s left): opening the next session", event.time_left_s)
                self._switching = True
                self._scope.spawn(self._switch(connection), name="gemini-switch")
            return False
        return True

    # --- opening, switching, recovering ---------------------------------------------------------------------
    async def _open(self, handle: str | None, history: tuple[TranscriptTurn, ...]) -> GeminiConnection:
        codec = self._new_codec()
        connection = await GeminiConnection.open(
            self._connector, codec, codec.setup(handle, history), self._inbox, self._scope
        )
        self._ctx.metrics.gemini_connect.observe(connection.connect_seconds)
        self._ctx.log.info("Gemini session ready in %.0f ms (resumed=%s)", connection.connect_seconds * 1000,
                           handle is not None)  # fmt: skip
        return connection

    async def _adopt(self, connection: GeminiConnection, greet: bool = False) -> None:
        if self._closed:
            await connection.close()
            return
        self.current = connection
        if greet:
            await connection.send(connection.codec.text(self._greeting))
        while self._unsent and self.current is connection:  # what the caller said while we were connecting
            pcm = self._unsent[0]
            if not await connection.send(connection.codec.audio(pcm)):
                return
            self._unsent.popleft()

    async def _switch(self, old: GeminiConnection) -> None:
        handle = old.codec.resume_handle
        try:
            new = await self._open(handle, () if handle else self._history())
        except GeminiUnavailable as exc:
            self._ctx.log.warning("could not open the next session early (%s): recovering when the old one ends",
                                  exc)  # fmt: skip
            return
        finally:
            self._switching = False
        if self.current is not old:  # the old one dropped meanwhile and recovery took over
            await new.close()
            return
        self._count_reconnect()
        self.previous = old
        await self._adopt(new)
        if not old.replying:
            self.previous = None
            await old.close()

    async def _recover(self, reason: str) -> None:
        lost, self.current = self.current, None
        self._ctx.log.warning("Gemini session closed unexpectedly (%s): reconnecting", reason)
        handle = lost.codec.resume_handle if lost is not None else None
        if lost is not None:
            await lost.close()
        attempts = ([(handle, ())] if handle else []) + [(None, self._history())]
        for attempt_handle, history in attempts:
            try:
                connection = await self._open(attempt_handle, history)
            except GeminiUnavailable as exc:
                reason = str(exc)
                self._ctx.log.warning("reconnect (resume=%s) failed: %s", attempt_handle is not None, exc)
                continue
            self._count_reconnect()
            await self._adopt(connection)
            return
        raise GeminiUnavailable(f"Gemini session lost and could not be restored: {reason}")

    def _count_reconnect(self) -> None:
        self.reconnects += 1
        self._ctx.metrics.reconnects.inc()

    async def close(self) -> None:
        self._closed = True
        for connection in (self.current, self.previous):
            if connection is not None:
                await connection.close()
        self.current = self.previous = None
