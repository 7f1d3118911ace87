"""How a call ends on purpose: the agent's `end_call`, MAX_CALL_SECONDS, IDLE_TIMEOUT_SECONDS, a Gemini failure.

`call_limit` is the rule, pure (times passed in). `CallEnding` acts on it: a timer that wakes at the next
deadline (not a polling loop); a goodbye (ask the agent for one, wait for its turn to complete and to be played,
bounded), then the hang-up through Twilio's REST API with the record's own call SID, never one from the stream.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from media_node.agent_playout import AgentPlayout
from media_node.call_context import CallContext
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.gemini_sessions import GeminiSessions
from media_node.task_scope import TaskScope

GOODBYE_GRACE_S = 12.0  # longest we wait for a goodbye to be said and played before hanging up
LIMIT_PROMPT = "[The call has reached its time limit. Say a short, polite goodbye now.]"
IDLE_PROMPT = "[The caller has been silent for a while. Say a short, polite goodbye now.]"

Hangup = Callable[[str], Awaitable[object]]  # TwilioRestClient.hangup


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


@dataclass(frozen=True)
class Limits:
    idle_timeout_s: float
    max_call_s: float


class CallEnding:
    def __init__(
        self,
        ctx: CallContext,
        lifecycle: CallLifecycle,
        limits: Limits,
        playout: AgentPlayout,
        sessions: GeminiSessions,
        scope: TaskScope,
        finish: Callable[[CallOutcome, str], None],
        hangup: Hangup | None,
        call_sid: Callable[[], Awaitable[str]],
        record_failure: Callable[[str], None],
    ) -> None:
        self._ctx, self._lifecycle, self._limits = ctx, lifecycle, limits
        self._playout, self._sessions, self._scope, self._finish = playout, sessions, scope, finish
        self._hangup, self._call_sid, self._record_failure = hangup, call_sid, record_failure
        self._started = self._last_frame = self._last_activity = ctx.monotonic()
        self._agent_spoke_at = -1.0  # when agent audio last went to the caller
        self._turn_done = asyncio.Event()

    # --- what the bridge reports ----------------------------------------------------------------------------
    def frame_received(self) -> None:
        self._last_frame = self._ctx.monotonic()

    def activity(self) -> None:
        """Someone spoke: the caller (a transcript) or the agent (audio sent)."""
        self._last_activity = self._ctx.monotonic()

    def agent_spoke(self) -> None:
        self._agent_spoke_at = self._last_activity = self._ctx.monotonic()

    def turn_completed(self) -> None:
        self._turn_done.set()

    async def next_turn_end(self) -> None:
        """Until the agent's current turn ends (turnComplete, or interrupted)."""
        self._turn_done.clear()
        await self._turn_done.wait()

    # --- ending on purpose ----------------------------------------------------------------------------------
    def say_goodbye(self, outcome: CallOutcome, reason: str, prompt: str | None = None) -> None:
        """End politely: ask for a goodbye (`prompt`; None when the agent already said it), let it play, hang up."""
        if self._lifecycle.begin_goodbye(outcome, reason):
            self._ctx.log.info("%s: saying goodbye", reason)
            self._scope.spawn(self._goodbye(prompt), name="goodbye")

    async def _goodbye(self, prompt: str | None) -> None:
        try:
            async with asyncio.timeout(GOODBYE_GRACE_S):
                if prompt is not None:
                    asked_at = self._ctx.monotonic()
                    self._turn_done.clear()
                    if await self._sessions.send_text(prompt):
                        # The turn that answers the prompt: one with agent audio after it (a late end of an
                        # earlier turn does not count).
                        while True:
                            await self._turn_done.wait()
                            self._turn_done.clear()
                            if self._agent_spoke_at > asked_at:
                                break
                await self._playout.wait_idle()
        except TimeoutError:
            self._ctx.log.info("goodbye not finished within %.0f s: hanging up", GOODBYE_GRACE_S)
        await self.hang_up(self._lifecycle.outcome or CallOutcome.COMPLETED, self._lifecycle.reason)

    async def hang_up(self, outcome: CallOutcome, reason: str) -> None:
        """End the phone call through Twilio (closing the stream alone would run the TwiML after <Connect>)."""
        sid = await self._call_sid() if self._hangup is not None else ""
        if sid and self._hangup is not None:
            try:
                await self._hangup(sid)
            except Exception as exc:  # Twilio down: closing the socket still ends <Connect>
                self._ctx.log.warning("hang-up through Twilio failed: %s", str(exc)[:200])
        self._finish(outcome, reason)

    async def fail(self, reason: str) -> None:
        """Gemini refused or vanished: say why in the record, and do not leave the caller in silence."""
        self._ctx.log.error("failing the call: %s", reason[:300])
        self._record_failure(reason)
        await self.hang_up(CallOutcome.GEMINI_FAILED, reason)

    # --- the limits timer -----------------------------------------------------------------------------------
    async def watch(self) -> None:
        """Wake at the next deadline; ends the call itself only when Twilio stopped sending frames."""
        idle, max_s = self._limits.idle_timeout_s, self._limits.max_call_s
        while True:
            now = self._ctx.monotonic()
            limit = call_limit(now, started_at=self._started, last_frame_at=self._last_frame,
                               last_activity_at=self._last_activity, agent_playing=self._playout.playing,
                               idle_timeout_s=idle, max_call_s=max_s)  # fmt: skip
            if limit is Limit.NO_FRAMES:
                self._ctx.log.warning("no frames from Twilio for %.0f s: ending", idle)
                self._finish(CallOutcome.LIMIT, "no frames from Twilio")
                return
            if limit is Limit.TIME_LIMIT:
                self.say_goodbye(CallOutcome.LIMIT, "time limit reached", LIMIT_PROMPT)
            elif limit is Limit.IDLE:
                self.say_goodbye(CallOutcome.LIMIT, "caller silent", IDLE_PROMPT)
            hard = min(self._last_frame + idle, self._started + max_s)
            soft = self._last_activity + idle
            if not self._lifecycle.live or soft > hard:
                await asyncio.sleep(max(0.05, hard - now))
            elif soft > now:
                await asyncio.sleep(max(0.05, soft - now))
            else:  # only the agent's audio still playing holds the idle limit off: wait for it to end
                try:
                    async with asyncio.timeout(max(0.05, hard - now)):
                        await self._playout.wait_idle()
                except TimeoutError:
                    pass
