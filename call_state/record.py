"""The call record: one per call, shared by the control plane and the media node.

Plain dataclasses with an explicit JSON shape (`to_dict` / `from_dict`) so both stores and the HTTP API
serialise it the same way. Times are Unix epoch seconds (floats); `expires_at` is an int for DynamoDB TTL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

from call_state.agent_actions import CallActions, actions_from_record


class CallStatus(enum.StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    INITIATED = "initiated"
    RINGING = "ringing"
    IN_PROGRESS = "in-progress"
    TRANSFERRED = "transferred"  # ours (Twilio has no such status): the agent handed the caller to a person
    COMPLETED = "completed"
    BUSY = "busy"
    NO_ANSWER = "no-answer"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def rank(self) -> int:
        """created < queued < initiated < ringing < in-progress < transferred < any terminal status."""
        return _RANK[self]


TERMINAL_STATUSES = frozenset(
    {CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.FAILED, CallStatus.CANCELED}
)
_RANK = {
    CallStatus.CREATED: 0,
    CallStatus.QUEUED: 1,
    CallStatus.INITIATED: 2,
    CallStatus.RINGING: 3,
    CallStatus.IN_PROGRESS: 4,
    CallStatus.TRANSFERRED: 5,
    **{s: 6 for s in TERMINAL_STATUSES},
}


class Direction(enum.StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"
    BROWSER = "browser"  # a call from the web console: no Twilio, the page speaks the Media Streams protocol


@dataclass(frozen=True)
class AgentSettings:
    """What the agent says and how: from the /make-call body, else the server defaults."""

    system_prompt: str
    greeting: str
    voice: str
    language: str

    def to_dict(self) -> dict[str, str]:
        return {
            "system_prompt": self.system_prompt,
            "greeting": self.greeting,
            "voice": self.voice,
            "language": self.language,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AgentSettings:
        return cls(
            system_prompt=str(d.get("system_prompt", "")),
            greeting=str(d.get("greeting", "")),
            voice=str(d.get("voice", "")),
            language=str(d.get("language", "")),
        )


@dataclass(frozen=True)
class StatusEvent:
    """One status change as reported (Twilio callback, our API, or the media node)."""

    status: CallStatus
    at: float
    sequence: int | None = None  # Twilio's SequenceNumber; None for our own events
    source: str = "twilio"
    detail: str = ""  # e.g. "sip=487" or an error text

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "at": self.at,
            "sequence": self.sequence,
            "source": self.source,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StatusEvent:
        seq = d.get("sequence")
        return cls(
            status=CallStatus(d["status"]),
            at=float(d["at"]),
            sequence=None if seq is None else int(seq),
            source=str(d.get("source", "twilio")),
            detail=str(d.get("detail", "")),
        )


@dataclass(frozen=True)
class StreamEvent:
    """A Media Streams status callback: stream-started, stream-stopped or stream-error."""

    event: str
    at: float
    stream_sid: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "at": self.at, "stream_sid": self.stream_sid, "error": self.error}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamEvent:
        return cls(
            event=str(d["event"]),
            at=float(d["at"]),
            stream_sid=str(d.get("stream_sid", "")),
            error=str(d.get("error", "")),
        )


@dataclass(frozen=True)
class TranscriptTurn:
    """One turn of the conversation. `index` orders turns within a call (0, 1, 2, ...)."""

    index: int
    role: str  # "caller" | "agent"
    text: str
    at: float  # when the turn began
    interrupted: bool = False
    partial: bool = False  # still being spoken: rewritten (same index) as it grows, then once more when whole

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "role": self.role,
            "text": self.text,
            "at": self.at,
            "interrupted": self.interrupted,
            "partial": self.partial,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TranscriptTurn:
        return cls(
            index=int(d["index"]),
            role=str(d["role"]),
            text=str(d["text"]),
            at=float(d["at"]),
            interrupted=bool(d.get("interrupted", False)),
            partial=bool(d.get("partial", False)),
        )


@dataclass(frozen=True)
class CallFigures:
    """Per-call measurements written by the media node."""

    answer_to_first_audio_ms: float | None = None
    barge_ins: int = 0
    audio_in_seconds: float = 0.0  # caller -> agent
    audio_out_seconds: float = 0.0  # agent -> caller
    gemini_reconnects: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer_to_first_audio_ms": self.answer_to_first_audio_ms,
            "barge_ins": self.barge_ins,
            "audio_in_seconds": self.audio_in_seconds,
            "audio_out_seconds": self.audio_out_seconds,
            "gemini_reconnects": self.gemini_reconnects,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallFigures:
        first = d.get("answer_to_first_audio_ms")
        return cls(
            answer_to_first_audio_ms=None if first is None else float(first),
            barge_ins=int(d.get("barge_ins", 0)),
            audio_in_seconds=float(d.get("audio_in_seconds", 0.0)),
            audio_out_seconds=float(d.get("audio_out_seconds", 0.0)),
            gemini_reconnects=int(d.get("gemini_reconnects", 0)),
        )


@dataclass(frozen=True)
class ToolCallRecord:
    """One function call of the agent (the user's tools, a transfer) and how it went."""

    tool_call_id: str  # Gemini's functionCalls[].id
    name: str
    arguments: dict[str, Any]
    status: str  # ok | error | timeout | refused | cancelled | ... (call_state.outbound.Failure values)
    ms: float
    at: float
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"tool_call_id": self.tool_call_id, "name": self.name, "arguments": self.arguments,
                "status": self.status, "ms": self.ms, "at": self.at, "error": self.error}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCallRecord:
        args = d.get("arguments")
        return cls(str(d["tool_call_id"]), str(d["name"]), args if isinstance(args, dict) else {},
                   str(d.get("status", "")), float(d.get("ms", 0.0)), float(d.get("at", 0.0)),
                   str(d.get("error", "")))  # fmt: skip


@dataclass(frozen=True)
class Recording:
    """Twilio's recording of the call (RecordingStatusCallback); the audio is served by GET /calls/{id}/recording."""

    sid: str
    url: str
    duration_s: float | None = None
    channels: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {"sid": self.sid, "url": self.url, "duration_s": self.duration_s, "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recording:
        duration = d.get("duration_s")
        return cls(str(d.get("sid", "")), str(d.get("url", "")), None if duration is None else float(duration),
                   int(d.get("channels", 2)))  # fmt: skip


@dataclass(frozen=True)
class CallRecord:
    call_id: str
    direction: Direction
    to: str
    from_: str
    agent: AgentSettings
    created_at: float
    expires_at: int
    status: CallStatus = CallStatus.CREATED
    status_history: tuple[StatusEvent, ...] = ()
    call_sid: str = ""
    stream_sid: str = ""  # set once, by the media node's claim_stream
    media_node: str = ""  # which media node claimed the stream (its node id)
    metadata: dict[str, Any] = field(default_factory=dict)
    transcript: tuple[TranscriptTurn, ...] = ()
    stream_events: tuple[StreamEvent, ...] = ()
    figures: CallFigures = field(default_factory=CallFigures)
    error: str = ""
    actions: CallActions = field(default_factory=CallActions)
    tool_calls: tuple[ToolCallRecord, ...] = ()
    transferred_to: str = ""
    answered_by: str = ""  # Twilio's AnsweredBy (answering machine detection), when asked for
    recording: Recording | None = None
    webhook: dict[str, Any] = field(default_factory=dict)  # end-of-call webhook delivery state

    def is_expired(self, now: float) -> bool:
        return self.expires_at <= now

    def with_changes(self, **changes: Any) -> CallRecord:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "direction": self.direction.value,
            "to": self.to,
            "from": self.from_,
            "status": self.status.value,
            "status_history": [e.to_dict() for e in self.status_history],
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "media_node": self.media_node,
            "agent": self.agent.to_dict(),
            "metadata": dict(self.metadata),
            "transcript": [t.to_dict() for t in self.transcript],
            "stream_events": [e.to_dict() for e in self.stream_events],
            "figures": self.figures.to_dict(),
            "error": self.error,
            "actions": self.actions.to_dict(),
            "tool_calls": [t.to_dict() for t in self.tool_calls],
            "transferred_to": self.transferred_to,
            "answered_by": self.answered_by,
            "recording": self.recording.to_dict() if self.recording else None,
            "webhook": dict(self.webhook),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CallRecord:
        return cls(
            call_id=str(d["call_id"]),
            direction=Direction(d.get("direction", "outbound")),
            to=str(d.get("to", "")),
            from_=str(d.get("from", "")),
            status=CallStatus(d.get("status", "created")),
            status_history=tuple(StatusEvent.from_dict(e) for e in d.get("status_history", [])),
            call_sid=str(d.get("call_sid", "")),
            stream_sid=str(d.get("stream_sid", "")),
            media_node=str(d.get("media_node", "")),
            agent=AgentSettings.from_dict(d.get("agent", {})),
            metadata=dict(d.get("metadata") or {}),
            transcript=tuple(TranscriptTurn.from_dict(t) for t in d.get("transcript", [])),
            stream_events=tuple(StreamEvent.from_dict(e) for e in d.get("stream_events", [])),
            figures=CallFigures.from_dict(d.get("figures") or {}),
            error=str(d.get("error", "")),
            actions=actions_from_record(d.get("actions")),
            tool_calls=tuple(ToolCallRecord.from_dict(t) for t in d.get("tool_calls", [])),
            transferred_to=str(d.get("transferred_to", "")),
            answered_by=str(d.get("answered_by", "")),
            recording=Recording.from_dict(d["recording"]) if d.get("recording") else None,
            webhook=dict(d.get("webhook") or {}),
            created_at=float(d["created_at"]),
            expires_at=int(d["expires_at"]),
        )
