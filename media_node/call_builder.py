"""Where one call's objects are made and wired together: the one place to read to see what a call is made of."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from call_state.ids import is_call_sid
from call_state.record import CallStatus, Direction
from media_node.agent_playout import AgentPlayout
from media_node.agent_tools import AgentTools
from media_node.audio import CallAudio
from media_node.bridge import CallBridge
from media_node.call_context import CallContext
from media_node.call_ending import CallEnding, Hangup, Limits
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.call_writes import CallWrites
from media_node.conversation import Conversation
from media_node.gemini_session import GeminiSession
from media_node.gemini_sessions import GeminiSessions
from media_node.stream_intake import AdmittedStream
from media_node.task_scope import TaskScope
from media_node.tool_declarations import declarations
from media_node.twilio_socket import TwilioSocket
from media_node.voicemail import VoicemailWatch

if TYPE_CHECKING:
    from media_node.node import MediaNode


def build_call(
    node: MediaNode,
    twilio: TwilioSocket,
    admitted: AdmittedStream,
    ctx: CallContext,
    lifecycle: CallLifecycle,
    scope: TaskScope,
) -> CallBridge:
    record, settings, actions = admitted.record, node.settings, admitted.record.actions
    writes = CallWrites(ctx, node.store, record.call_id)
    conv = Conversation(answered_at=ctx.monotonic())
    tools = declarations(settings.gemini_model, actions)  # once per call: every session of it gets the same
    audio = CallAudio()
    sessions = GeminiSessions(
        node.connector,
        lambda: GeminiSession(settings.gemini_model, record.agent, tools),
        record.agent.greeting,
        conv.history,
        scope,
        ctx,
    )
    playout = AgentPlayout(admitted.stream, audio, twilio, ctx)
    over = asyncio.Event()

    def finish(outcome: CallOutcome, reason: str) -> None:
        """The call is over: the first reason wins, and the bridge's `run` returns."""
        if lifecycle.end(outcome, reason):
            over.set()

    async def call_sid() -> str:
        """The record's own SID: from the record we read, else read again (the dial may have just answered)."""
        if is_call_sid(record.call_sid):
            return record.call_sid
        fresh = await node.store.get_call(record.call_id, ctx.clock())
        return fresh.call_sid if fresh is not None and is_call_sid(fresh.call_sid) else ""

    async def answered_by() -> str:
        fresh = await node.store.get_call(record.call_id, ctx.clock())
        return fresh.answered_by if fresh is not None else ""

    phone = record.direction is not Direction.BROWSER
    hangup: Hangup | None = node.twilio.hangup if phone and node.twilio is not None else None
    ending = CallEnding(
        ctx,
        lifecycle,
        Limits(settings.idle_timeout_seconds, settings.max_call_seconds),
        playout,
        sessions,
        scope,
        finish,
        hangup,
        call_sid,
        writes.failed,
    )
    bridge = CallBridge(
        finish=finish,
        ctx=ctx,
        lifecycle=lifecycle,
        stream=admitted.stream,
        twilio=twilio,
        audio=audio,
        sessions=sessions,
        playout=playout,
        ending=ending,
        tools=AgentTools(
            ctx,
            lifecycle,
            actions,
            sessions,
            playout,
            ending,
            writes,
            scope,
            node.outbound,
            node.transfer if phone else None,
            call_sid,
        ),
        conv=conv,
        writes=writes,
        scope=scope,
        over=over,
    )
    if actions.voicemail is not None and phone:
        bridge.voicemail = VoicemailWatch(ctx, lifecycle, actions.voicemail, answered_by, sessions, playout, ending,
                                          bridge.interrupt_agent)  # fmt: skip
    writes.status(CallStatus.IN_PROGRESS)
    return bridge
