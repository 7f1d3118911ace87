"""How a call ends on purpose: the agent's `end_call` tool, MAX_CALL_SECONDS, IDLE_TIMEOUT_SECONDS, Gemini failure.

`call_limit` is the rule, pure (times passed in). `CallEnding` is the part of `CallBridge` that acts on it: ask the
agent for a short goodbye, let it play out (bounded), hang up through Twilio's REST API, close the stream.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from typing import TYPE_CHECKING

from call_state.record import CallRecord, CallStatus, StatusEvent
from media_node.gemini_session import GeminiSession, ToolCall
from media_node.playback import PlaybackTracker

if TYPE_CHECKING:
    from media_node.bridge import TwilioSocket
    from media_node.node import MediaNode

GOODBYE_GRACE_S = 12.0  # longest we wait for a goodbye to be said and played before hanging up
LIMIT_PROMPT = "[The call has reached its time limit. Say a short, polite goodbye now.]"
IDLE_PROMPT = "[The caller has been silent for a while. Say a short, polite goodbye now.]"


class Limit(enum.Enum):
    NO_FRAMES = "no_frames"  # Twilio went quiet: the stream is dead, end without a goodbye
    TIME_LIMIT = "time_limit"  # MAX_CALL_SECONDS: say goodbye
    IDLE = "idle"  # nobody spoke for IDLE_TIMEOUT_SECONDS: say goodbye


def call_limit(
    now: float,
    *,
    started_at: float,
    last_frame_at: float,
    last_activity_at: float,
    agent_playing: bool,
    idle_timeout_s: float,
    max_call_s: float,
) -> Limit | None:
    """Which limit, if any, the call has reached at `now` (all times on one monotonic clock)."""
    if now - last_frame_at > idle_timeout_s:
        return Limit.NO_FRAMES
    if now - started_at > max_call_s:
        return Limit.TIME_LIMIT
    if now - last_activity_at > idle_timeout_s and not agent_playing:
        return Limit.IDLE
    return None


class CallEnding:
    """Mixed into CallBridge; the attributes below are the bridge's."""

    node: MediaNode
    twilio: TwilioSocket
    record: CallRecord
    session: GeminiSession
    playback: PlaybackTracker
    call_sid: str
    outcome: str
    closing: bool
    turns_done: int
    last_frame_at: float
    last_activity_at: float

    if TYPE_CHECKING:

        def _log(self, level: int, msg: str, *args: object, exc_info: BaseException | None = None) -> None: ...
        async def _send_gemini(self, frame: str, pcm16k: bytes | None = None) -> None: ...

    async def _fail(self, reason: str) -> None:
        """Gemini refused or vanished: say why in the record, and do not leave the caller in silence."""
        self.outcome = "gemini_failed"
        self._log(logging.ERROR, "failing the call: %s", reason)
        node, call_id, now = self.node, self.record.call_id, time.time()
        event = StatusEvent(CallStatus.FAILED, now, None, "media", reason[:500])
        node.writer.submit("failed", lambda: node.store.apply_status(call_id, event, now))
        node.writer.submit("error", lambda: node.store.update_call(call_id, now, error=reason[:1000]))
        await self._hang_up()

    async def _tool_call(self, call: ToolCall) -> None:
        if call.name != "end_call":
            await self._send_gemini(self.session.tool_response(call.call_id, call.name, {"error": "unknown tool"}))
            return
        self._log(logging.INFO, "agent ended the call (%s)", str(call.args.get("reason", ""))[:100])
        await self._send_gemini(self.session.tool_response(call.call_id, call.name, {"result": "ok"}))
        asyncio.create_task(self._end_after_goodbye(), name="end-call")  # noqa: RUF006

    async def _end_after_goodbye(self, say: str | None = None) -> None:
        """End politely: optionally ask for a goodbye, let it play out (bounded), then hang up."""
        if self.closing:
            return
        self.closing = True
        deadline = time.monotonic() + GOODBYE_GRACE_S
        if say:
            turns = self.turns_done
            await self._send_gemini(self.session.text(say))
            while self.turns_done == turns and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        while self.playback.playing and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._hang_up()

    async def _hang_up(self) -> None:
        client = self.node.twilio
        if client is not None and self.call_sid.startswith("CA"):
            try:
                await client.hangup(self.call_sid)
            except Exception as exc:  # Twilio down: closing the socket still ends <Connect>
                self._log(logging.WARNING, "hang-up through Twilio failed: %s", exc)
        await self.twilio.close(1000, "call ended")

    async def _watchdog(self) -> None:
        """Check the limits once a second; returns (ending the bridge) only when Twilio stopped sending frames."""
        settings = self.node.settings
        started = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            limit = call_limit(
                time.monotonic(),
                started_at=started,
                last_frame_at=self.last_frame_at,
                last_activity_at=self.last_activity_at,
                agent_playing=self.playback.playing,
                idle_timeout_s=settings.idle_timeout_seconds,
                max_call_s=settings.max_call_seconds,
            )
            if limit is Limit.NO_FRAMES:
                self._log(logging.WARNING, "no frames from Twilio for %d s: ending", settings.idle_timeout_seconds)
                self.outcome = "idle"
                return
            if limit is None or self.closing:
                continue
            self._log(logging.INFO, "%s reached: saying goodbye", limit.value)
            self.outcome = limit.value
            prompt = LIMIT_PROMPT if limit is Limit.TIME_LIMIT else IDLE_PROMPT
            asyncio.create_task(self._end_after_goodbye(prompt))  # noqa: RUF006
