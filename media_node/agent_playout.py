"""Agent audio to the caller: whole 20 ms frames and a mark per chunk, what was heard, and barge-in.

Gemini's 24 kHz PCM is converted (media_node/audio.py) into mu-law frames and sent as Twilio `media`, each chunk
followed by a `mark`; Twilio echoes a mark once the audio before it has played, which `PlaybackTracker` turns
into how much of the turn the caller heard. On barge-in the queued audio is dropped here first, then Twilio's
buffer with `clear`. `wait_idle()` waits (on an event, no polling) until everything sent has been played.
"""

from __future__ import annotations

import asyncio

from media_node.audio import CallAudio
from media_node.call_context import CallContext
from media_node.playback import PlaybackTracker
from media_node.twilio_socket import TwilioSocket
from media_node.twilio_stream import TwilioStream


class AgentPlayout:
    def __init__(self, stream: TwilioStream, audio: CallAudio, twilio: TwilioSocket, ctx: CallContext) -> None:
        self._stream, self._audio, self._twilio, self._ctx = stream, audio, twilio, ctx
        self.tracker = PlaybackTracker()
        self._idle = asyncio.Event()
        self._idle.set()
        self._muted = False  # the rest of the current reply is dropped (see mute_until_turn_end)

    async def play(self, pcm24: bytes) -> int:
        """Convert and send agent audio; returns the mu-law bytes sent (0 while a frame is still filling)."""
        if self._muted:
            return 0
        return await self._send(self._audio.gemini_to_caller(pcm24))

    def mute_until_turn_end(self) -> None:
        """Drop the rest of the reply Gemini is still sending (its turn ends with turnComplete or interrupted)."""
        self._muted = True
        self._audio.reset_outbound()

    async def end_of_reply(self) -> int:
        """Generation or turn complete: send the filter tail and the last partial frame (padded)."""
        if self._muted:
            self._audio.reset_outbound()
            return 0
        return await self._send(self._audio.flush_caller())

    def turn_complete(self) -> None:
        self.tracker.new_turn()
        self._muted = False

    async def barge_in(self) -> float:
        """The caller talked over the agent: drop what we hold, then Twilio's buffer. Returns the heard share."""
        self._audio.reset_outbound()
        await self._twilio.send(self._stream.clear())
        self.tracker.interrupt()
        heard = self.tracker.heard_fraction()
        self.tracker.new_turn()
        self._idle.set()
        self._muted = False
        self._ctx.metrics.barge_ins.inc()
        return heard

    def mark_echoed(self, name: str) -> None:
        self.tracker.echoed(name)
        if not self.tracker.playing:
            self._idle.set()

    @property
    def playing(self) -> bool:
        return self.tracker.playing

    async def wait_idle(self) -> None:
        """Until the caller has heard everything sent (or it was cleared)."""
        await self._idle.wait()

    async def _send(self, ulaw: bytes) -> int:
        if not ulaw:
            return 0
        self._idle.clear()
        await self._twilio.send(self._stream.media(ulaw))
        await self._twilio.send(self._stream.mark(self.tracker.sent(len(ulaw))))
        return len(ulaw)
