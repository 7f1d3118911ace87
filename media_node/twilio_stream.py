"""Twilio Media Streams, sans-I/O: text frames in, events out; events to send, text frames out.

`TwilioStream.receive(text)` parses one WebSocket text frame and returns events (`Started`, `CallerAudio`,
`Dtmf`, `MarkEchoed`, `Stopped`, `Rejected`). It never raises: malformed, oversized or out-of-order frames
become a `Rejected` event with a reason, and `Rejected(fatal=True)` means the stream must be closed.
`media()`, `mark()` and `clear()` build the frames we send (all need the `streamSid` from `start`).
"""

from __future__ import annotations

import binascii
import re
from base64 import b64encode
from dataclasses import dataclass, field

import orjson

from call_state.ids import CALL_SID, STREAM_SID, loggable
from call_state.numbers import ascii_int

# A 20 ms frame is ~330 characters of JSON; 64 KiB leaves room for any real frame and bounds the work.
MAX_FRAME_CHARS = 64 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024
_WORD = re.compile(r"[a-z_]{1,20}")  # an event or track name as Twilio spells them


@dataclass(frozen=True)
class Connected:
    protocol: str


@dataclass(frozen=True)
class Started:
    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallerAudio:
    ulaw: bytes
    timestamp_ms: int


@dataclass(frozen=True)
class Dtmf:
    digit: str


@dataclass(frozen=True)
class MarkEchoed:
    name: str


@dataclass(frozen=True)
class Stopped:
    pass


@dataclass(frozen=True)
class Rejected:
    reason: str
    fatal: bool = False


TwilioEvent = Connected | Started | CallerAudio | Dtmf | MarkEchoed | Stopped | Rejected


def _name(value: object) -> str:
    """A value from the wire as it may appear in a reason (and so a log line): a short repr."""
    return loggable(value, _WORD)


def _text(obj: object, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


class TwilioStream:
    """One Media Streams connection as a state machine. No I/O, no clock."""

    def __init__(self) -> None:
        self.stream_sid = ""
        self.call_sid = ""
        self.started = False
        self.stopped = False

    def receive(self, text: str | bytes) -> list[TwilioEvent]:
        if isinstance(text, bytes):
            return [Rejected("binary frame (Twilio sends text frames only)")]
        if len(text) > MAX_FRAME_CHARS:
            return [Rejected(f"frame of {len(text)} characters exceeds {MAX_FRAME_CHARS}")]
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            return [Rejected("frame is not JSON")]
        if not isinstance(msg, dict):
            return [Rejected("frame is not a JSON object")]
        event = msg.get("event")
        if self.stopped:
            return [Rejected(f"{_name(event)} after stop")]
        if event == "media":
            return self._media(msg)
        if event == "start":
            return self._start(msg)
        if event == "connected":
            return [Connected(_text(msg, "protocol"))]
        if not self.started:
            return [Rejected(f"{_name(event)} before start")]
        if event == "mark":
            name = _text(msg.get("mark"), "name")
            return [MarkEchoed(name)] if name else [Rejected("mark without a name")]
        if event == "dtmf":
            digit = _text(msg.get("dtmf"), "digit")
            if len(digit) == 1 and digit in "0123456789*#ABCD":
                return [Dtmf(digit)]
            return [Rejected("dtmf without a valid digit")]
        if event == "stop":
            self.stopped = True
            return [Stopped()]
        return [Rejected(f"unknown event {_name(event)}")]

    def _start(self, msg: dict[str, object]) -> list[TwilioEvent]:
        if self.started:
            return [Rejected("second start")]
        start = msg.get("start")
        stream_sid = _text(start, "streamSid") or _text(msg, "streamSid")
        call_sid = _text(start, "callSid")
        if not isinstance(start, dict) or not STREAM_SID.fullmatch(stream_sid) or not CALL_SID.fullmatch(call_sid):
            return [Rejected("start without a valid streamSid (MZ…) and callSid (CA…)", fatal=True)]
        params = start.get("customParameters")
        custom = {k: v for k, v in params.items() if isinstance(v, str)} if isinstance(params, dict) else {}
        self.stream_sid, self.call_sid, self.started = stream_sid, call_sid, True
        return [Started(stream_sid, call_sid, _text(start, "accountSid"), custom)]

    def _media(self, msg: dict[str, object]) -> list[TwilioEvent]:
        if not self.started:
            return [Rejected("media before start")]
        media = msg.get("media")
        payload = _text(media, "payload")
        track = _text(media, "track")
        if track and track != "inbound":
            return [Rejected(f"media on track {_name(track)}")]
        if not payload:
            return [Rejected("media without payload")]
        if len(payload) > MAX_PAYLOAD_BYTES * 4 // 3 + 4:
            return [Rejected("media payload too large")]
        try:
            ulaw = binascii.a2b_base64(payload, strict_mode=True)  # C, strict: one pass, no regex
        except (binascii.Error, ValueError):
            return [Rejected("media payload is not base64")]
        stamp = _text(media, "timestamp")
        timestamp = ascii_int(stamp)
        return [CallerAudio(ulaw, -1 if timestamp is None else timestamp)]

    # --- frames we send -------------------------------------------------------------------------------------
    def media(self, ulaw: bytes) -> str:
        # The hottest frame we build: a template (streamSid is validated `MZ` + hex, base64 needs no escaping).
        payload = b64encode(ulaw).decode()
        return f'{{"event":"media","streamSid":"{self.stream_sid}","media":{{"payload":"{payload}"}}}}'

    def mark(self, name: str) -> str:
        return orjson.dumps({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}).decode()

    def clear(self) -> str:
        return orjson.dumps({"event": "clear", "streamSid": self.stream_sid}).decode()
