"""Gemini Live sessions of one call: open one, switch to the next on `goAway`, recover from a drop.

Mixed into `CallBridge`. Every session's socket gets a reader task that feeds the bridge's one inbox, so
switching is just changing `self.link`; the old link is let go when its reply has played. On `goAway` the next
session opens with the latest resumption handle while the old one still works (never greeting again). On an
unexpected close: resume with the handle, else start fresh with the transcript so far; if both fail, the call fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import websockets

from call_state.record import TranscriptTurn
from media_node.conversation import Conversation
from media_node.gemini_link import GeminiLink, GeminiUnavailable, open_link
from media_node.gemini_session import GeminiEvent, GeminiSession
from media_node.playback import PlaybackTracker

if TYPE_CHECKING:
    from media_node.node import MediaNode


class SessionSwitching:
    """The attributes below are the bridge's."""

    node: MediaNode
    session: GeminiSession
    conv: Conversation
    playback: PlaybackTracker
    link: GeminiLink | None
    old_link: GeminiLink | None
    inbox: asyncio.Queue[tuple[GeminiLink, bytes | str | None]]
    unsent: deque[bytes]
    ready: bool
    ending: bool

    if TYPE_CHECKING:

        def _log(self, level: int, msg: str, *args: object, exc_info: BaseException | None = None) -> None: ...
        async def _send_gemini(self, frame: str, pcm16k: bytes | None = None) -> None: ...
        async def _on_gemini(self, event: GeminiEvent, link: GeminiLink) -> None: ...
        async def _fail(self, reason: str) -> None: ...

    async def _connect(self, resume: bool, history: tuple[TranscriptTurn, ...] = (), greet: bool = False) -> GeminiLink:
        settings = self.node.settings
        link = await open_link(
            settings.gemini_live_url, settings.gemini_api_key, self.session, self.session.setup(resume, history)
        )
        self.node.metrics.gemini_connect.observe(link.connect_seconds)
        self._log(logging.INFO, "Gemini session ready in %.0f ms (resumed=%s)", link.connect_seconds * 1000, resume)
        self.old_link, self.link = self.link, link
        asyncio.create_task(self._read(link), name="gemini-reader")  # noqa: RUF006 - ends with its socket
        for event in link.early_events:
            await self._on_gemini(event, link)
        self.ready = True
        if greet:
            await self._send_gemini(self.session.greeting())  # the agent speaks first, once per call
        while self.unsent and self.ready:  # what the caller said while we were connecting
            pcm = self.unsent.popleft()
            await self._send_gemini(self.session.audio(pcm), pcm)
        return link

    async def _read(self, link: GeminiLink) -> None:
        try:
            async for frame in link.ws:
                await self.inbox.put((link, frame))
        except websockets.ConnectionClosed:
            pass
        finally:
            code, reason = link.ws.close_code, link.ws.close_reason
            link.closed_reason = f"{code} {reason or ''}".strip() if code else "connection lost"
            if not self.ending:
                await self.inbox.put((link, None))

    async def _switch(self) -> None:
        """goAway: open the next session with the resumption handle while the old one still works."""
        try:
            old = self.link
            await self._connect(resume=True)
            self.conv.reconnects += 1
            self.node.metrics.reconnects.inc()
            if old is not None and not self.playback.playing:
                self.old_link = None
                await old.ws.close()
        except GeminiUnavailable as exc:
            self._log(logging.WARNING, "could not open the next session early: %s", exc)

    async def _recover(self, reason: str) -> bool:
        """The current session dropped: resume it, or start a fresh one that knows the conversation."""
        self.ready = False
        self._log(logging.WARNING, "Gemini session closed unexpectedly (%s): reconnecting", reason)
        attempts: list[tuple[bool, tuple[TranscriptTurn, ...]]] = [(True, ())] if self.session.resume_handle else []
        attempts.append((False, self.conv.history()))
        for resume, history in attempts:
            try:
                await self._connect(resume=resume, history=history)
                self.conv.reconnects += 1
                self.node.metrics.reconnects.inc()
                return True
            except GeminiUnavailable as exc:
                reason = str(exc)
                self._log(logging.WARNING, "reconnect (resume=%s) failed: %s", resume, exc)
        await self._fail(f"Gemini session lost and could not be restored: {reason}")
        return False
