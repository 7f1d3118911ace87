"""One call: Twilio Media Streams <-> Gemini Live. The two loops; everything else is in the objects they call.

Twilio -> Gemini (`_from_twilio`): a `media` frame's mu-law becomes 16 kHz PCM (media_node/audio.py) and goes to
the current Gemini session (`GeminiSessions.send_audio`, which wraps it in `realtimeInput`); marks, DTMF, `stop`.
Gemini -> Twilio (`_from_gemini`): agent audio to `AgentPlayout` (mu-law frames + marks), `interrupted` to a
barge-in (`clear`), transcripts to `Conversation`, tool calls to `AgentTools`. Built by call_builder.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from call_state.record import TranscriptTurn
from media_node.agent_playout import AgentPlayout
from media_node.agent_tools import AgentTools
from media_node.audio import CallAudio
from media_node.call_context import CallContext
from media_node.call_ending import CallEnding
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.call_writes import CallWrites
from media_node.conversation import Conversation
from media_node.gemini_connection import GeminiUnavailable
from media_node.gemini_session import (
    AgentAudio,
    GeminiEvent,
    GenerationComplete,
    InputTranscript,
    Interrupted,
    Malformed,
    OutputTranscript,
    ToolCall,
    ToolCallCancelled,
    TurnComplete,
)
from media_node.gemini_sessions import GeminiSessions
from media_node.task_scope import TaskScope
from media_node.twilio_socket import TwilioSocket
from media_node.twilio_stream import CallerAudio, Dtmf, MarkEchoed, Rejected, Stopped, TwilioStream
from media_node.voicemail import VoicemailWatch


@dataclass
class CallBridge:
    finish: Callable[[CallOutcome, str], None]  # ends the call: `run` returns and the call's tasks are cancelled
    ctx: CallContext
    lifecycle: CallLifecycle
    stream: TwilioStream
    twilio: TwilioSocket
    audio: CallAudio
    sessions: GeminiSessions
    playout: AgentPlayout
    ending: CallEnding
    tools: AgentTools
    conv: Conversation
    writes: CallWrites
    scope: TaskScope
    over: asyncio.Event
    voicemail: VoicemailWatch | None = None  # calls that asked what to do on an answering machine

    async def run(self) -> None:
        """Bridge until the call is over (`finish`), then cancel the call's tasks."""
        self.scope.spawn(self._from_twilio(), name="from-twilio")
        self.scope.spawn(self._from_gemini(), name="from-gemini")
        self.scope.spawn(self.ending.watch(), name="limits")
        if self.voicemail is not None:
            self.scope.spawn(self.voicemail.run(), name="voicemail")
        await self.over.wait()
        self.scope.cancel()

    async def interrupt_agent(self) -> None:
        """Stop the agent mid-turn (the caller talked over it, or a machine answered): clear, and cut its turn."""
        heard = await self.playout.barge_in()
        self._store(self.conv.interrupted(self.ctx.clock(), heard))

    # --- Twilio -> Gemini -----------------------------------------------------------------------------------
    async def _from_twilio(self) -> None:
        while (frame := await self.twilio.receive_frame()) is not None:
            self.ending.frame_received()
            for event in self.stream.receive(frame):
                match event:
                    case CallerAudio(ulaw=ulaw):
                        self.conv.caller_audio(len(ulaw))
                        await self.sessions.send_audio(self.audio.caller_to_gemini(ulaw))
                    case MarkEchoed(name=name):
                        self.playout.mark_echoed(name)
                    case Dtmf(digit=digit):
                        await self.sessions.send_text(f"[The caller pressed the {digit} key.]")
                    case Stopped():
                        self.finish(CallOutcome.COMPLETED, "Twilio sent stop")
                        return
                    case Rejected(reason=reason):
                        self.ctx.frame_error("twilio", reason)
        self.finish(CallOutcome.COMPLETED, "Twilio closed the stream")

    # --- Gemini -> Twilio -----------------------------------------------------------------------------------
    async def _from_gemini(self) -> None:
        try:
            await self.sessions.start()
            while True:
                for event in await self.sessions.next_events():
                    await self._on_gemini(event)
        except GeminiUnavailable as exc:
            await self.ending.fail(str(exc))

    async def _on_gemini(self, event: GeminiEvent) -> None:
        now = self.ctx.clock()
        match event:
            case AgentAudio(pcm24=pcm24):
                self._played(await self.playout.play(pcm24))
            case Interrupted():
                await self.interrupt_agent()
                self.ending.turn_completed()
            case OutputTranscript(text=text):
                self._store(self.conv.agent_said(text, now))
            case InputTranscript(text=text):
                self.ending.activity()
                self._store(self.conv.caller_said(text, now))
            case GenerationComplete():
                self._played(await self.playout.end_of_reply())
            case TurnComplete():
                self._played(await self.playout.end_of_reply())
                self.playout.turn_complete()
                self._store(self.conv.agent_done(now))
                self.ending.turn_completed()
            case ToolCall():
                await self.tools.call(event)
            case ToolCallCancelled():
                self.tools.cancelled(event)
            case Malformed(reason=reason):
                self.ctx.frame_error("gemini", reason)

    def _played(self, size: int) -> None:
        if not size:
            return
        now = self.ctx.monotonic()
        if self.conv.first_audio_at is None:
            self.ctx.metrics.first_audio.observe(now - self.conv.answered_at)
        self.conv.agent_audio(size, now)
        self.ending.agent_spoke()

    def _store(self, turns: list[TranscriptTurn]) -> None:
        if turns:
            self.writes.turns(turns)
