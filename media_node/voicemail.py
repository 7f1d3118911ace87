"""Answering machines: when Twilio's answering machine detection says a machine took the call, leave the
call's message after the beep, or hang up at once.

The dial asks for async AMD (`MachineDetection=DetectMessageEnd`): the call is bridged at once, and Twilio reports
`AnsweredBy` later to the control plane's `/amd/{call_id}`, which writes it into the record. The node that bridges
the call watches the record for it (every `POLL_S`, only on calls that set `voicemail`, only until the answer
arrives or `WATCH_S` has passed). That works the same in every deployment, including a fleet behind a load
balancer where the control plane cannot know which node holds the call; the cost is one small read per call every
half second for the few seconds AMD takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from call_state.agent_actions import Voicemail, VoicemailAction
from media_node.agent_playout import AgentPlayout
from media_node.call_context import CallContext
from media_node.call_ending import CallEnding
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.gemini_sessions import GeminiSessions

POLL_S = 0.5
WATCH_S = 90.0  # DetectMessageEnd waits for the greeting and the beep: up to ~30 s; then AMD has given up
OLD_REPLY_GRACE_S = 3.0
MACHINE = frozenset({"machine_end_beep", "machine_end_silence", "machine_end_other"})
PROMPT = (
    "[An answering machine took the call and the beep has sounded. Leave this message now, as it is, in one turn, "
    "then stop talking: {message}]"
)


class VoicemailWatch:
    def __init__(
        self,
        ctx: CallContext,
        lifecycle: CallLifecycle,
        voicemail: Voicemail,
        answered_by: Callable[[], Awaitable[str]],
        sessions: GeminiSessions,
        playout: AgentPlayout,
        ending: CallEnding,
        interrupt_agent: Callable[[], Awaitable[None]],
    ) -> None:
        self._ctx, self._lifecycle, self._voicemail, self._answered_by = ctx, lifecycle, voicemail, answered_by
        self._sessions, self._playout, self._ending, self._interrupt = sessions, playout, ending, interrupt_agent

    async def run(self) -> None:
        deadline = self._ctx.monotonic() + WATCH_S
        while self._ctx.monotonic() < deadline and self._lifecycle.live:
            answered_by = await self._answered_by()
            if answered_by:
                self._ctx.log.info("answered by %s", answered_by if answered_by.isidentifier() else "?")
                if answered_by in MACHINE:
                    await self._machine()
                return
            await asyncio.sleep(POLL_S)

    async def _machine(self) -> None:
        if self._voicemail.action is VoicemailAction.HANG_UP:
            await self._ending.hang_up(CallOutcome.HUNG_UP_BY_AGENT, "answering machine: hung up")
            return
        replying = self._sessions.replying
        await self._interrupt()  # stop what the agent was saying to the machine
        if replying:  # let that reply end (its tail is dropped) before the message starts
            self._playout.mute_until_turn_end()
            try:
                async with asyncio.timeout(OLD_REPLY_GRACE_S):
                    await self._ending.next_turn_end()
            except TimeoutError:
                pass
        self._ending.say_goodbye(
            CallOutcome.HUNG_UP_BY_AGENT,
            "answering machine: message left",
            PROMPT.format(message=self._voicemail.message),
        )
