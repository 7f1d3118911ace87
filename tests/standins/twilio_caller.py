"""A loopback stand-in for Twilio's side of a bidirectional Media Stream: the phone caller.

It connects like Twilio (optionally with `x-twilio-signature`), sends `connected`, `start` (with custom
parameters), then 20 ms mu-law `media` frames in real time (a tone while "talking", silence otherwise). What
the bridge sends back is played out in real time through a small jitter buffer: marks are echoed when the audio
before them has played, and `clear` drops the buffer and echoes every pending mark, as Twilio documents.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from media_node.audio import FRAME_BYTES as FRAME
from media_node.audio import pcm16_to_ulaw

SILENCE = b"\xff" * FRAME


def tone_ulaw(ms: int, freq: float = 300.0, amplitude: int = 6000) -> bytes:
    n = np.arange(ms * 8)
    return pcm16_to_ulaw((amplitude * np.sin(2 * np.pi * freq * n / 8000)).astype(np.int16))


@dataclass
class TwilioCaller:
    url: str
    call_id: str = ""
    token: str = ""
    stream_sid: str = "MZ" + "0" * 32
    call_sid: str = "CA" + "0" * 32
    account_sid: str = "AC" + "0" * 32
    signature: str | None = None
    origin: str | None = None  # a browser sends its page's Origin
    dialer: Callable[[dict[str, str]], Awaitable[Any]] | None = None  # in-memory instead of a real socket
    ws: Any = None  # ClientConnection, or the client end of an in-memory pair
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    played: bytearray = field(default_factory=bytearray)
    clears: list[float] = field(default_factory=list)
    first_media_at: float | None = None
    start_sent_at: float | None = None
    close_code: int | None = None
    _buffer: deque[tuple[str, bytes | str]] = field(default_factory=deque)
    _talk: deque[bytes] = field(default_factory=deque)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    media_after_clear: int = 0
    talk_sent_at: list[float] = field(default_factory=list)  # when each talk() frame went out

    async def connect(self, start: bool = True) -> TwilioCaller:
        headers = {"x-twilio-signature": self.signature} if self.signature is not None else {}
        if self.origin is not None:
            headers["Origin"] = self.origin
        if self.dialer is not None:
            self.ws = await self.dialer(headers)
        else:
            self.ws = await connect(self.url, additional_headers=headers, compression=None)
        self._tasks.append(asyncio.create_task(self._receive()))
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        if start:
            await self.start()
        return self

    async def start(self, extra: dict[str, str] | None = None) -> None:
        params = {"call_id": self.call_id, "token": self.token, **(extra or {})}
        await self.send({
            "event": "start", "sequenceNumber": "1", "streamSid": self.stream_sid,
            "start": {"accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
                      "tracks": ["inbound"], "customParameters": params,
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        })  # fmt: skip
        self.start_sent_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._send_frames()))
        self._tasks.append(asyncio.create_task(self._play_out()))

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        """Send like Twilio; a socket the bridge already closed swallows the frame (read `close_code`)."""
        assert self.ws is not None
        try:
            await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
        except ConnectionClosed:
            pass

    def talk(self, ulaw: bytes) -> None:
        """Queue caller speech; it goes out in 20 ms frames, in real time, instead of silence."""
        self._talk.extend(ulaw[i : i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(ulaw), FRAME))

    async def stop(self) -> None:
        await self.send({"event": "stop", "sequenceNumber": "99", "streamSid": self.stream_sid,
                         "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}})  # fmt: skip

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.ws is not None:
            await self.ws.close()

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        assert self.ws is not None
        async with asyncio.timeout(timeout):
            await self.ws.wait_closed()
        self.close_code = self.ws.close_code
        return self.close_code

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.received if m.get("event") == kind]

    async def _send_frames(self) -> None:
        try:
            await self._send_frames_forever()
        except Exception:  # the bridge closed the socket: the call is over
            pass

    async def _send_frames_forever(self) -> None:
        seq, chunk, started = 2, 1, time.monotonic()
        while True:
            talking = bool(self._talk)
            frame = self._talk.popleft() if talking else SILENCE
            await self.send({
                "event": "media", "sequenceNumber": str(seq), "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20),
                          "payload": base64.b64encode(frame).decode()},
            })  # fmt: skip
            if talking:
                self.talk_sent_at.append(time.monotonic())
            seq, chunk = seq + 1, chunk + 1
            await asyncio.sleep(max(0.0, started + (chunk - 1) * 0.02 - time.monotonic()))  # absolute clock

    async def _receive(self) -> None:
        assert self.ws is not None
        try:
            async for frame in self.ws:
                message = json.loads(frame)
                now = time.monotonic()
                self.received.append((now, message))
                event = message.get("event")
                if event == "media":
                    if self.first_media_at is None:
                        self.first_media_at = now
                    if self.clears and not self._buffer:
                        self.media_after_clear += 1
                    self._buffer.append(("audio", base64.b64decode(message["media"]["payload"])))
                elif event == "mark":
                    self._buffer.append(("mark", message["mark"]["name"]))
                elif event == "clear":
                    self.clears.append(now)
                    pending = [name for kind, name in self._buffer if kind == "mark"]
                    self._buffer.clear()
                    for name in pending:
                        await self._echo(str(name))
        except Exception:
            pass
        finally:
            self.close_code = self.ws.close_code

    async def _play_out(self) -> None:
        """Jitter buffer: play 20 ms every 20 ms; echo marks once the audio before them is out."""
        try:
            await self._play_out_forever()
        except Exception:
            pass

    async def _play_out_forever(self) -> None:
        started, ticks = time.monotonic(), 0
        while True:
            budget = FRAME
            while self._buffer and (self._buffer[0][0] == "mark" or budget > 0):
                kind, item = self._buffer[0]
                if kind == "mark":
                    self._buffer.popleft()
                    await self._echo(str(item))
                    continue
                data = bytes(item)  # type: ignore[arg-type]
                take = data[:budget]
                self.played += take
                budget -= len(take)
                if len(take) == len(data):
                    self._buffer.popleft()
                else:
                    self._buffer[0] = ("audio", data[len(take) :])
            ticks += 1
            await asyncio.sleep(max(0.0, started + ticks * 0.02 - time.monotonic()))

    async def _echo(self, name: str) -> None:
        try:
            await self.send({"event": "mark", "sequenceNumber": "0", "streamSid": self.stream_sid,
                             "mark": {"name": name}})  # fmt: skip
        except Exception:
            pass
