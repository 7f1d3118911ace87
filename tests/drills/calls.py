"""Calls for the drills, placed the way the control plane and Twilio place them, through Nginx.

A call is created in the shared store (as `/make-call` would), its stream token minted with the shared secret,
and a loopback Twilio caller (tests/standins) opens the signed stream through Nginx. It is *bridged* once the
caller hears the agent's greeting from the loopback Gemini. It *finished normally* if, after whatever the drill
did, audio still flows both ways, and the stream ends with a close 1000 after the caller's `stop`; a stream that
closed before the `stop` was *cut*.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from call_state.record import AgentSettings, CallRecord, Direction
from call_state.store import CallStore
from call_state.tokens import StreamTokens
from tests.standins.gemini_server import GeminiSessionStandIn, GeminiStandIn, tone_pcm24
from tests.standins.twilio_caller import TwilioCaller, tone_ulaw

ACCOUNT_SID = "AC" + "0" * 32


@dataclass
class DrillCall:
    call_id: str
    caller: TwilioCaller
    placed_at: float
    bridged_at: float | None = None
    session: GeminiSessionStandIn | None = None
    refused: str = ""  # why it was never bridged

    @property
    def closed(self) -> bool:
        return self.caller.ws is None or self.caller.ws.close_code is not None


class CallDesk:
    def __init__(self, store: CallStore, secret: str, auth_token: str, gemini: GeminiStandIn, stream_url: str) -> None:
        self.store, self.gemini, self.stream_url = store, gemini, stream_url
        self.tokens = StreamTokens(secret.encode())
        self.signature = RequestValidator(auth_token).compute_signature(stream_url, {})
        self.placed = 0

    async def place(self, call_id: str, timeout_s: float = 10.0) -> DrillCall:
        now = time.time()
        agent = AgentSettings(f"You are the drill agent of call {call_id}.", "Greet the caller.", "Puck", "en-US")
        record = CallRecord(call_id, Direction.OUTBOUND, "+15551230000", "+15559870000", agent, now, int(now) + 3600)
        await asyncio.to_thread(self.store.create_call, record)
        self.placed += 1
        caller = TwilioCaller(
            self.stream_url, call_id=call_id, token=self.tokens.mint(call_id, now), signature=self.signature,
            stream_sid=f"MZ{self.placed:032d}", call_sid=f"CA{self.placed:032d}", account_sid=ACCOUNT_SID,
        )  # fmt: skip
        call = DrillCall(call_id, caller, time.monotonic())
        try:
            async with asyncio.timeout(timeout_s):
                await caller.connect()
                await caller.wait_for(lambda: caller.first_media_at is not None or call.closed, timeout_s)
                if caller.first_media_at is None:
                    raise ConnectionError(f"stream closed with {caller.ws and caller.ws.close_code} before audio")
                call.bridged_at = caller.first_media_at
                await caller.wait_for(lambda: self._session(call_id) is not None, timeout_s)
                call.session = self._session(call_id)
        except Exception as exc:  # a refused upgrade (403/502), a closed stream, or no greeting in time
            call.refused = f"{type(exc).__name__}: {exc}"[:200]
            await caller.close()
        return call

    async def still_bridged(self, call: DrillCall, timeout_s: float = 5.0) -> bool:
        """The agent can still speak to the caller, and the caller's audio still reaches the agent."""
        session = call.session
        if session is None or call.closed:
            return False
        heard, frames = len(call.caller.events("media")), session.audio_frames
        try:
            call.caller.talk(tone_ulaw(200))
            await session.speak(tone_pcm24(200), "Still here.")
            await call.caller.wait_for(lambda: len(call.caller.events("media")) > heard, timeout_s)
            await call.caller.wait_for(lambda: session.audio_frames >= frames + 10, timeout_s)
        except Exception:
            return False
        return not call.closed

    async def hang_up(self, call: DrillCall, timeout_s: float = 10.0) -> bool:
        """The caller hangs up; True if the stream was still open and ended cleanly (1000)."""
        if call.bridged_at is None:
            return False
        if call.closed:
            await call.caller.close()
            return False
        await call.caller.stop()
        code = None
        with contextlib.suppress(TimeoutError):
            code = await call.caller.wait_closed(timeout_s)
        await call.caller.close()
        return code == 1000

    def _session(self, call_id: str) -> GeminiSessionStandIn | None:
        marker = f"drill agent of call {call_id}."
        for session in self.gemini.sessions:
            if session.setup is not None and marker in session.setup.model_dump_json():
                return session
        return None
