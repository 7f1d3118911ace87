"""Gemini Live (BidiGenerateContent) messages, sans-I/O: build what we send, parse what arrives.

Only the wire format lives here; the socket is media_node/gemini_link.py. Server frames arrive as binary JSON
and are parsed leniently (unknown fields ignored, a future field must not end a call). Model-specific rules
(gemini-live.md §2.3): 3.8 rejects `thinkingConfig`, `enableAffectiveDialog` and `proactiveAudio: false`, so
the setup sends none of them; `sessionResumption` is always present and never carries `handle: null`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from call_state.agent_actions import CallActions
from call_state.numbers import ascii_int
from call_state.record import AgentSettings, TranscriptTurn
from media_node.tool_declarations import declarations

INPUT_MIME = "audio/pcm;rate=16000"
MAX_HANDLE_CHARS = 4096
_AUDIO_HEAD = b'{"realtimeInput":{"audio":{"mimeType":"' + INPUT_MIME.encode() + b'","data":"'
_AUDIO_TAIL = b'"}}}'
_DURATION = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9})?s")


@dataclass(frozen=True)
class SetupComplete:
    pass


@dataclass(frozen=True)
class AgentAudio:
    pcm24: bytes


@dataclass(frozen=True)
class Interrupted:
    pass


@dataclass(frozen=True)
class GenerationComplete:
    pass


@dataclass(frozen=True)
class TurnComplete:
    pass


@dataclass(frozen=True)
class InputTranscript:
    text: str


@dataclass(frozen=True)
class OutputTranscript:
    text: str


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolCallCancelled:
    call_ids: tuple[str, ...]


@dataclass(frozen=True)
class GoAway:
    time_left_s: float


@dataclass(frozen=True)
class Usage:
    total_tokens: int


@dataclass(frozen=True)
class Malformed:
    reason: str


GeminiEvent = (
    SetupComplete
    | AgentAudio
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | InputTranscript
    | OutputTranscript
    | ToolCall
    | ToolCallCancelled
    | GoAway
    | Usage
    | Malformed
)


def _duration_seconds(text: object) -> float:
    """Protobuf Duration JSON ("50s", "1.5s"), ASCII digits only; anything else is 0."""
    if isinstance(text, str) and _DURATION.fullmatch(text):
        return float(text[:-1])
    return 0.0


def _b64(data: str) -> bytes:
    padded = data + "=" * (-len(data) % 4)
    if "-" in data or "_" in data:  # the SDK sends URL-safe base64, the server standard; accept both
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def _short(value: object) -> str:
    """An id from Gemini as a bounded string (it goes back to Gemini in a toolResponse, and into logs as repr)."""
    return value[:128] if isinstance(value, str) else ""


def _dumps(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


class GeminiSession:
    """The protocol state of one Live connection: whether setup is complete, and its latest resumption handle.

    One instance per WebSocket (see gemini_connection.py): a handle learnt on one socket is read from that
    socket's codec when the next one is opened.
    """

    def __init__(self, model: str, agent: AgentSettings, tools: list[dict[str, Any]] | None = None) -> None:
        self.model = model if model.startswith("models/") else f"models/{model}"
        self.agent = agent
        self.tools = tools if tools is not None else declarations(model, CallActions())
        self.resume_handle: str | None = None
        self.setup_complete = False

    def setup(self, resume_handle: str | None = None, history: tuple[TranscriptTurn, ...] = ()) -> str:
        """The first frame: resume the session of `resume_handle`, or start fresh (seeded with `history`)."""
        instruction = self.agent.system_prompt
        if history:
            lines = "\n".join(f"{t.role}: {t.text}" for t in history if t.text)
            instruction += (
                "\n\nThe call is already in progress (the connection was restored). Do not greet again. "
                f"Conversation so far:\n{lines}"
            )
        speech: dict[str, Any] = {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": self.agent.voice}}}
        if self.agent.language:
            speech["languageCode"] = self.agent.language
        setup: dict[str, Any] = {
            "model": self.model,
            "generationConfig": {"responseModalities": ["AUDIO"], "speechConfig": speech},
            "systemInstruction": {"parts": [{"text": instruction}]},
            "tools": [{"functionDeclarations": self.tools}],
            "inputAudioTranscription": {},
            "outputAudioTranscription": {},
            # Always present (no handle key at all for a fresh session: `"handle": null` is refused with 1007).
            "sessionResumption": {"handle": resume_handle} if resume_handle else {},
            "contextWindowCompression": {"triggerTokens": 25600, "slidingWindow": {"targetTokens": 12800}},
        }
        self.setup_complete = False
        return _dumps({"setup": setup})

    def greeting(self) -> str:
        return self.text(self.agent.greeting)

    def text(self, text: str) -> str:
        return _dumps({"realtimeInput": {"text": text}})

    def audio(self, pcm16k: bytes) -> bytes:
        """The hottest frame we send, 50 a second: a template, as UTF-8 bytes (sent as a text frame)."""
        return _AUDIO_HEAD + base64.b64encode(pcm16k) + _AUDIO_TAIL

    def audio_stream_end(self) -> str:
        return _dumps({"realtimeInput": {"audioStreamEnd": True}})

    def tool_response(self, call_id: str, name: str, response: dict[str, Any], scheduling: str | None = None) -> str:
        """The answer to a `toolCall`. `scheduling` (async tools) goes both inside `response`, as Google's docs
        show, and on the function response, as the SDK has it: which one the server reads is not documented."""
        answer: dict[str, Any] = {"id": call_id, "name": name, "response": response}
        if scheduling is not None:
            answer = {**answer, "response": {**response, "scheduling": scheduling}, "scheduling": scheduling}
        return _dumps({"toolResponse": {"functionResponses": [answer]}})

    def receive(self, frame: bytes | str) -> list[GeminiEvent]:
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError:
            return [Malformed("frame is not JSON")]
        if not isinstance(msg, dict):
            return [Malformed("frame is not a JSON object")]
        events: list[GeminiEvent] = []
        if "setupComplete" in msg:
            self.setup_complete = True
            events.append(SetupComplete())
        content = msg.get("serverContent")
        if isinstance(content, dict):
            events += self._content(content)
        tool_call = msg.get("toolCall")
        calls = tool_call.get("functionCalls") if isinstance(tool_call, dict) else None
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict) and isinstance(call.get("name"), str):
                args = call.get("args")
                events.append(
                    ToolCall(_short(call.get("id")), call["name"][:64], args if isinstance(args, dict) else {})
                )
        cancelled = msg.get("toolCallCancellation")
        ids = cancelled.get("ids") if isinstance(cancelled, dict) else None
        if isinstance(ids, list):
            events.append(ToolCallCancelled(tuple(_short(i) for i in ids[:64])))
        update = msg.get("sessionResumptionUpdate")
        if isinstance(update, dict) and update.get("resumable") is True and isinstance(update.get("newHandle"), str):
            if 0 < len(update["newHandle"]) <= MAX_HANDLE_CHARS:
                self.resume_handle = update["newHandle"]  # keep the last non-empty handle
        go_away = msg.get("goAway")
        if isinstance(go_away, dict):
            events.append(GoAway(_duration_seconds(go_away.get("timeLeft"))))
        usage = msg.get("usageMetadata")
        if isinstance(usage, dict):
            events.append(Usage(ascii_int(usage.get("totalTokenCount")) or 0))
        if "error" in msg:
            events.append(Malformed(f"error frame: {str(msg['error'])[:200]}"))
        return events

    def _content(self, content: dict[str, Any]) -> list[GeminiEvent]:
        events: list[GeminiEvent] = []
        turn = content.get("modelTurn")
        parts = turn.get("parts") if isinstance(turn, dict) else None
        for part in parts if isinstance(parts, list) else []:
            inline = part.get("inlineData") if isinstance(part, dict) else None
            if isinstance(inline, dict) and isinstance(inline.get("data"), str):
                try:
                    events.append(AgentAudio(_b64(inline["data"])))
                except (binascii.Error, ValueError):
                    events.append(Malformed("audio part is not base64"))
        for key, kind in (("inputTranscription", InputTranscript), ("outputTranscription", OutputTranscript)):
            value = content.get(key)
            if isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"]:
                events.append(kind(value["text"]))
        if content.get("interrupted"):
            events.append(Interrupted())
        if content.get("generationComplete"):
            events.append(GenerationComplete())
        if content.get("turnComplete"):
            events.append(TurnComplete())
        return events
