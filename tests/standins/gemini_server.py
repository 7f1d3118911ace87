"""A loopback stand-in for the Gemini Live API that speaks its exact wire protocol.

Every client frame is validated strictly with the google-genai pydantic types (typos, unknown keys, bad enums,
two message types at once all fail), `setup` must come first and nothing else may arrive before
`setupComplete`; audio must declare `audio/pcm;rate=16000`. Server frames go out as binary JSON, like Google's.
A test drives the conversation through `GeminiSessionStandIn` methods (`speak`, `interrupt`, `go_away`, ...),
or relies on the default behaviour: reply to any text input with a short spoken turn.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, serve
from websockets.exceptions import ConnectionClosedError

from tests.standins.memory_socket import MemorySocket, socket_pair

try:
    from google.genai import types
except ImportError:  # the bench venv runs the stand-in without validation (validate=False)
    types = None  # type: ignore[assignment]

if types is not None:

    class WireSetup(types.LiveClientSetup):
        # Missing from google-genai's LiveClientSetup although the API accepts it (gemini-live.md §9).
        realtime_input_config: types.RealtimeInputConfig | None = None

    class WireClientMessage(types.LiveClientMessage):
        setup: WireSetup | None = None


def validate_client_frame(frame: str | bytes) -> WireClientMessage:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unknown enum value is only a warning in the SDK
        msg = WireClientMessage.model_validate_json(frame)
    if len(msg.model_fields_set) != 1:
        raise ValueError(f"exactly one message type expected, got {sorted(msg.model_fields_set)}")
    return msg


def tone_pcm24(ms: int, freq: float = 440.0, amplitude: int = 8000) -> bytes:
    n = np.arange(ms * 24)
    return (amplitude * np.sin(2 * np.pi * freq * n / 24000)).astype("<i2").tobytes()


@dataclass
class GeminiSessionStandIn:
    ws: Any  # websockets' ServerConnection, or the server end of an in-memory pair
    api_key: str
    setup: WireSetup | None = None
    texts: list[str] = field(default_factory=list)
    audio_bytes: int = 0
    audio_frames: int = 0
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    first_audio_at: float | None = None
    setup_raw: dict[str, Any] = field(default_factory=dict)
    setup_at: float = 0.0
    text_at: float = 0.0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    abrupt_close: bool = False

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message).encode())  # binary frames, as Google sends them

    async def speak(self, pcm24: bytes, text: str = "", chunk_sizes: tuple[int, ...] = (4801, 1203, 9999, 77)) -> None:
        """One agent turn: audio in chunks of odd and varied sizes, a transcript, then the turn end."""
        offset, i = 0, 0
        while offset < len(pcm24):
            size = chunk_sizes[i % len(chunk_sizes)]
            part = pcm24[offset : offset + size]
            offset, i = offset + size, i + 1
            content: dict[str, Any] = {
                "modelTurn": {
                    "parts": [
                        {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(part).decode()}}
                    ]
                }
            }
            if i == 1 and text:
                content["outputTranscription"] = {"text": text}
            await self.send({"serverContent": content})
        await self.send({"serverContent": {"generationComplete": True}})
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": {"totalTokenCount": 42}})

    async def speak_chunks(self, chunks: list[bytes]) -> None:
        for part in chunks:
            await self.send(
                {
                    "serverContent": {
                        "modelTurn": {
                            "parts": [
                                {
                                    "inlineData": {
                                        "mimeType": "audio/pcm;rate=24000",
                                        "data": base64.b64encode(part).decode(),
                                    }
                                }
                            ]
                        }
                    }
                }
            )

    async def interrupt(self) -> None:
        await self.send({"serverContent": {"interrupted": True}})
        await self.send({"serverContent": {"turnComplete": True}})

    async def heard(self, text: str) -> None:
        await self.send({"serverContent": {"inputTranscription": {"text": text}}})

    async def resumption_handle(self, handle: str) -> None:
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    async def go_away(self, seconds: int = 50) -> None:
        await self.send({"goAway": {"timeLeft": f"{seconds}s"}})

    async def tool_call(self, name: str, call_id: str = "fc_1", args: dict[str, Any] | None = None) -> None:
        await self.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args or {}}]}})


class GeminiStandIn:
    """Serve on 127.0.0.1:<free port>. `url` goes into GEMINI_LIVE_URL."""

    def __init__(self, *, auto_reply: bool = True, reply_ms: int = 300, refuse: tuple[int, str] | None = None,
                 setup_delay_s: float = 0.0, validate: bool = True,
                 on_audio: Callable[[GeminiSessionStandIn, bytes], None] | None = None) -> None:  # fmt: skip
        self.validate = validate  # off only for load benchmarks, where validation would dominate the CPU
        self.on_audio = on_audio
        self.auto_reply = auto_reply
        self.reply_ms = reply_ms
        self.refuse = refuse  # close every session at setup with this (code, reason), like a bad key
        self.setup_delay_s = setup_delay_s
        self.sessions: list[GeminiSessionStandIn] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.new_session = asyncio.Condition()
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> GeminiStandIn:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None, max_size=2**22)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def connector(self, api_key: str = "test-gemini-key-not-real") -> Callable[[], Awaitable[MemorySocket]]:
        """A GeminiConnector for MediaNode that reaches this stand-in through in-memory sockets (no port)."""

        async def connect() -> MemorySocket:
            client, server = socket_pair({"x-goog-api-key": api_key})
            self._tasks.add(asyncio.create_task(self._handle(server)))
            return client

        return connect

    async def session(self, index: int = 0, timeout: float = 5.0) -> GeminiSessionStandIn:
        async with asyncio.timeout(timeout):
            async with self.new_session:
                await self.new_session.wait_for(
                    lambda: len(self.sessions) > index and self.sessions[index].setup is not None
                )
        return self.sessions[index]

    @property
    def all_errors(self) -> list[str]:
        return [e for s in self.sessions for e in s.errors]

    async def _handle(self, ws: Any) -> None:
        key = ws.request.headers.get("x-goog-api-key", "") if ws.request else ""
        session = GeminiSessionStandIn(ws, key)
        self.sessions.append(session)
        try:
            async for frame in ws:
                if isinstance(frame, bytes):
                    session.errors.append("client sent a binary frame")
                    continue
                if not self.validate:
                    await self._on_raw(session, json.loads(frame))
                    continue
                try:
                    msg = validate_client_frame(frame)
                except Exception as exc:
                    session.errors.append(f"invalid frame: {exc}"[:500])
                    continue
                await self._on_message(session, msg, json.loads(frame))
        except ConnectionClosedError:
            session.abrupt_close = True  # the client went away without a close frame (a killed process)
        finally:
            session.closed.set()

    async def _on_raw(self, session: GeminiSessionStandIn, raw: dict[str, Any]) -> None:
        """The same behaviour without pydantic validation (load benchmarks)."""
        if "setup" in raw:
            session.setup = raw["setup"]  # type: ignore[assignment]
            session.setup_raw = raw["setup"]
            session.setup_at = time.monotonic()
            await session.send({"setupComplete": {}})
            async with self.new_session:
                self.new_session.notify_all()
            return
        rin = raw.get("realtimeInput") or {}
        if "audio" in rin:
            session.audio_frames += 1
            if self.on_audio is not None:
                self.on_audio(session, base64.b64decode(rin["audio"]["data"]))
        elif "text" in rin:
            session.texts.append(rin["text"])
            session.text_at = time.monotonic()
            if self.auto_reply:
                self._tasks.add(asyncio.create_task(session.speak(tone_pcm24(self.reply_ms), "Hello.")))

    async def _on_message(self, session: GeminiSessionStandIn, msg: WireClientMessage, raw: dict[str, Any]) -> None:
        if msg.setup is not None:
            if session.setup is not None:
                session.errors.append("second setup")
                return
            if (
                "handle" in (raw["setup"].get("sessionResumption") or {})
                and not raw["setup"]["sessionResumption"]["handle"]
            ):
                session.errors.append("sessionResumption.handle is empty or null")
            if self.refuse:
                await session.ws.close(*self.refuse)
                return
            await asyncio.sleep(self.setup_delay_s)
            session.setup = msg.setup
            await session.send({"setupComplete": {}})
            async with self.new_session:
                self.new_session.notify_all()
            return
        if session.setup is None:
            session.errors.append(f"{sorted(raw)} before setup")
            return
        if msg.realtime_input is not None:
            rin = msg.realtime_input
            if rin.audio is not None:
                if rin.audio.mime_type != "audio/pcm;rate=16000":
                    session.errors.append(f"audio mime {rin.audio.mime_type!r}")
                if session.first_audio_at is None:
                    session.first_audio_at = asyncio.get_running_loop().time()
                session.audio_bytes += len(rin.audio.data or b"")
                session.audio_frames += 1
            if rin.text is not None:
                session.texts.append(rin.text)
                if self.auto_reply:
                    self._tasks.add(
                        asyncio.create_task(session.speak(tone_pcm24(self.reply_ms), "Hello, how can I help?"))
                    )
        elif msg.tool_response is not None:
            session.tool_responses.append(raw["toolResponse"])
