"""Transcript turns and per-call figures, assembled from bridge events. Sans-I/O: time is passed in.

Gemini streams transcription fragments: the caller's (`inputTranscription`) and the agent's
(`outputTranscription`). A caller turn closes when the agent starts answering; an agent turn closes on
`turnComplete`, or on `interrupted` with its text cut to what the caller heard.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from call_state.record import CallFigures, TranscriptTurn
from media_node.playback import cut_text


@dataclass
class Conversation:
    answered_at: float  # Twilio `start`: the callee answered and the stream opened
    next_index: int = 0
    caller_text: str = ""
    agent_text: str = ""
    turns: list[TranscriptTurn] = field(default_factory=list)
    first_audio_at: float | None = None
    barge_ins: int = 0
    audio_in_bytes: int = 0  # mu-law 8 kHz from the caller
    audio_out_bytes: int = 0  # mu-law 8 kHz to the caller
    reconnects: int = 0

    def caller_audio(self, size: int) -> None:
        self.audio_in_bytes += size

    def agent_audio(self, size: int, now: float) -> None:
        if self.first_audio_at is None:
            self.first_audio_at = now
        self.audio_out_bytes += size

    def caller_said(self, text: str, now: float) -> list[TranscriptTurn]:
        self.caller_text += text
        return []

    def agent_said(self, text: str, now: float) -> list[TranscriptTurn]:
        closed = self._close_caller(now)
        self.agent_text += text
        return closed

    def agent_done(self, now: float) -> list[TranscriptTurn]:
        """turnComplete: the agent's turn is whole (the caller may still be mid-sentence)."""
        return self._close_agent(now, interrupted=False, heard=1.0)

    def interrupted(self, now: float, heard_fraction: float) -> list[TranscriptTurn]:
        self.barge_ins += 1
        return self._close_agent(now, interrupted=True, heard=heard_fraction)

    def finish(self, now: float) -> list[TranscriptTurn]:
        """End of call: close whatever is open."""
        return self._close_caller(now) + self._close_agent(now, interrupted=False, heard=1.0)

    def _close_caller(self, now: float) -> list[TranscriptTurn]:
        text = self.caller_text.strip()
        self.caller_text = ""
        return [self._turn("caller", text, now, False)] if text else []

    def _close_agent(self, now: float, interrupted: bool, heard: float) -> list[TranscriptTurn]:
        text = self.agent_text.strip()
        self.agent_text = ""
        if not text:
            return []
        return [self._turn("agent", cut_text(text, heard) if interrupted else text, now, interrupted)]

    def _turn(self, role: str, text: str, now: float, interrupted: bool) -> TranscriptTurn:
        turn = TranscriptTurn(self.next_index, role, text, now, interrupted)
        self.next_index += 1
        self.turns.append(turn)
        return turn

    def history(self) -> tuple[TranscriptTurn, ...]:
        return tuple(self.turns)

    def figures(self) -> CallFigures:
        first = None if self.first_audio_at is None else round((self.first_audio_at - self.answered_at) * 1000, 1)
        return CallFigures(
            answer_to_first_audio_ms=first,
            barge_ins=self.barge_ins,
            audio_in_seconds=round(self.audio_in_bytes / 8000, 2),
            audio_out_seconds=round(self.audio_out_bytes / 8000, 2),
            gemini_reconnects=self.reconnects,
        )
