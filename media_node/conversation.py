"""Transcript turns and per-call figures, assembled from bridge events. Sans-I/O: time is passed in.

Gemini streams transcription fragments: the caller's (`inputTranscription`) and the agent's
(`outputTranscription`). A turn gets its index when its first fragment arrives, and is handed out as a `partial`
turn while it grows (at most every `PARTIAL_EVERY_S`, so a live console shows the words as they are spoken); it
is handed out whole when it closes: a caller turn when the agent starts answering, an agent turn on
`turnComplete`, or on `interrupted` with its text cut to what the caller heard. Writing the same index again
replaces the stored turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from call_state.record import CallFigures, TranscriptTurn
from media_node.audio import BYTES_PER_SECOND
from media_node.playback import cut_text

PARTIAL_EVERY_S = 0.5


@dataclass
class _OpenTurn:
    index: int
    role: str
    began_at: float
    text: str = ""
    shown_at: float | None = None  # when a partial version was last handed out


@dataclass
class Conversation:
    answered_at: float  # Twilio `start` (monotonic): the callee answered and the stream opened
    next_index: int = 0
    caller: _OpenTurn | None = None
    agent: _OpenTurn | None = None
    turns: list[TranscriptTurn] = field(default_factory=list)  # closed turns, in index order
    first_audio_at: float | None = None
    barge_ins: int = 0
    audio_in_bytes: int = 0  # mu-law 8 kHz from the caller
    audio_out_bytes: int = 0  # mu-law 8 kHz to the caller

    def caller_audio(self, size: int) -> None:
        self.audio_in_bytes += size

    def agent_audio(self, size: int, now: float) -> None:
        if self.first_audio_at is None and size:
            self.first_audio_at = now
        self.audio_out_bytes += size

    def caller_said(self, text: str, now: float) -> list[TranscriptTurn]:
        self.caller = self.caller or self._open("caller", now)
        self.caller.text += text
        return self._partial(self.caller, now)

    def agent_said(self, text: str, now: float) -> list[TranscriptTurn]:
        closed = self._close_caller(now)
        self.agent = self.agent or self._open("agent", now)
        self.agent.text += text
        return closed + self._partial(self.agent, now)

    def agent_done(self, now: float) -> list[TranscriptTurn]:
        """turnComplete: the agent's turn is whole (the caller may still be mid-sentence)."""
        return self._close_agent(interrupted=False, heard=1.0)

    def interrupted(self, now: float, heard_fraction: float) -> list[TranscriptTurn]:
        self.barge_ins += 1
        return self._close_agent(interrupted=True, heard=heard_fraction)

    def finish(self, now: float) -> list[TranscriptTurn]:
        """End of call: close whatever is open."""
        return self._close_caller(now) + self._close_agent(interrupted=False, heard=1.0)

    def _open(self, role: str, now: float) -> _OpenTurn:
        turn = _OpenTurn(self.next_index, role, now)
        self.next_index += 1
        return turn

    def _partial(self, turn: _OpenTurn, now: float) -> list[TranscriptTurn]:
        text = turn.text.strip()
        if not text or (turn.shown_at is not None and now - turn.shown_at < PARTIAL_EVERY_S):
            return []
        turn.shown_at = now
        return [TranscriptTurn(turn.index, turn.role, text, turn.began_at, partial=True)]

    def _close_caller(self, now: float) -> list[TranscriptTurn]:
        turn, self.caller = self.caller, None
        return self._closed(turn, turn.text.strip() if turn else "", interrupted=False)

    def _close_agent(self, interrupted: bool, heard: float) -> list[TranscriptTurn]:
        turn, self.agent = self.agent, None
        text = turn.text.strip() if turn else ""
        return self._closed(turn, cut_text(text, heard) if interrupted and text else text, interrupted)

    def _closed(self, turn: _OpenTurn | None, text: str, interrupted: bool) -> list[TranscriptTurn]:
        if turn is None or not (text or turn.shown_at is not None):
            return []  # nothing was said (or shown): no turn, its index stays unused
        whole = TranscriptTurn(turn.index, turn.role, text, turn.began_at, interrupted)
        self.turns.append(whole)
        return [whole]

    def history(self) -> tuple[TranscriptTurn, ...]:
        return tuple(self.turns)

    def figures(self, gemini_reconnects: int = 0) -> CallFigures:
        first = None if self.first_audio_at is None else round((self.first_audio_at - self.answered_at) * 1000, 1)
        return CallFigures(
            answer_to_first_audio_ms=first,
            barge_ins=self.barge_ins,
            audio_in_seconds=round(self.audio_in_bytes / BYTES_PER_SECOND, 2),
            audio_out_seconds=round(self.audio_out_bytes / BYTES_PER_SECOND, 2),
            gemini_reconnects=gemini_reconnects,
        )
