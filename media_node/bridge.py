"""One call: Twilio Media Streams <-> Gemini Live. Thin asyncio around the sans-I/O parts.

Two loops per call: `_from_twilio` (caller audio up, marks, DTMF) and `_from_gemini` (agent audio down,
barge-in, transcripts, tools, reconnects), plus a one-second watchdog for the time limits. Opening, switching and
recovering Gemini sessions lives in `session_switching.py`; ending a call on purpose in `call_ending.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import websockets

from call_state.record import CallRecord, CallStatus, StatusEvent, TranscriptTurn
from call_state.store import CallNotFound, StreamAlreadyClaimed
from media_node.audio import CallAudio
from media_node.call_ending import CallEnding
from media_node.conversation import Conversation
from media_node.gemini_link import GeminiLink, GeminiUnavailable
from media_node.gemini_session import (
    AgentAudio,
    GeminiEvent,
    GeminiSession,
    GenerationComplete,
    GoAway,
    InputTranscript,
    Interrupted,
    Malformed,
    OutputTranscript,
    ToolCall,
    TurnComplete,
)
from media_node.playback import PlaybackTracker
from media_node.session_switching import SessionSwitching
from media_node.stream_auth import StreamRefused
from media_node.twilio_stream import CallerAudio, Dtmf, MarkEchoed, Rejected, Started, Stopped, TwilioStream

if TYPE_CHECKING:
    from media_node.node import MediaNode

log = logging.getLogger(__name__)
START_TIMEOUT_S = 10.0
MAX_BUFFERED_FRAMES = 50  # caller audio kept while Gemini (re)connects: 1 s


class TwilioSocket(Protocol):
    async def receive_frame(self) -> str | bytes | None: ...  # None: the socket closed
    async def send(self, text: str) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class CallBridge(SessionSwitching, CallEnding):
    def __init__(self, node: MediaNode, twilio: TwilioSocket, *, browser: bool = False) -> None:
        self.node, self.twilio, self.browser = node, twilio, browser
        self.stream = TwilioStream()
        self.audio = CallAudio()
        self.playback = PlaybackTracker()
        self.call_id = self.call_sid = "-"
        self.link: GeminiLink | None = None
        self.old_link: GeminiLink | None = None
        self.inbox: asyncio.Queue[tuple[GeminiLink, bytes | str | None]] = asyncio.Queue(256)
        self.unsent: deque[bytes] = deque(maxlen=MAX_BUFFERED_FRAMES)
        self.ready = False
        self.ending = False  # tearing down: Gemini closes are expected
        self.closing = False  # saying goodbye: no new goodbye, no new limits
        self.turns_done = 0
        self.outcome = "completed"
        self.last_frame_at = self.last_activity_at = time.monotonic()

    def _log(self, level: int, msg: str, *args: object, exc_info: BaseException | None = None) -> None:
        log.log(level, "call %s (%s): " + msg, self.call_id, self.call_sid, *args, exc_info=exc_info)

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def run(self, upgrade_headers: dict[str, str]) -> str:
        """Bridge until either side ends; returns the outcome for metrics."""
        try:
            if not self.browser:  # a browser has no Twilio signature: its Origin was checked at the upgrade
                self.node.gate.check_upgrade(upgrade_headers)
            started = await self._wait_for_start()
            if started is None:
                return "no_start"
            self.call_sid = started.call_sid
            call_id = self.node.gate.call_id(started)
            self.call_id = call_id
            record = await self.node.store.get_call(call_id, time.time())
            record = self.node.gate.check_start(started, record, time.time(), browser=self.browser)
            try:
                await self.node.store.claim_stream(call_id, started.stream_sid, "local", time.time())
            except (StreamAlreadyClaimed, CallNotFound):
                raise StreamRefused("this call already had a media stream") from None
        except StreamRefused as exc:
            self._log(logging.WARNING, "stream refused: %s", exc)
            self.node.metrics.rejected.labels(reason=str(exc).split(":")[0][:40]).inc()
            await self.twilio.close(1008, "policy violation")
            return "rejected"
        await self._bridge(record, started)
        return self.outcome

    async def _wait_for_start(self) -> Started | None:
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    frame = await self.twilio.receive_frame()
                    if frame is None:
                        return None
                    for event in self.stream.receive(frame):
                        if isinstance(event, Started):
                            return event
                        if isinstance(event, Rejected):
                            self._frame_error(event)
                            if event.fatal:
                                raise StreamRefused(event.reason)
        except TimeoutError:
            raise StreamRefused(f"no start within {START_TIMEOUT_S:.0f} s") from None

    async def _bridge(self, record: CallRecord, started: Started) -> None:
        node = self.node
        self.record = record
        self.conv = Conversation(answered_at=time.monotonic())
        self.session = GeminiSession(node.settings.gemini_model, record.agent)
        now = time.time()
        event = StatusEvent(CallStatus.IN_PROGRESS, now, None, "media")
        node.writer.submit("in-progress", lambda: node.store.apply_status(record.call_id, event, now))
        self._log(logging.INFO, "stream %s started, opening Gemini", started.stream_sid)
        tasks = [
            asyncio.create_task(self._from_twilio(), name="from-twilio"),
            asyncio.create_task(self._from_gemini(), name="from-gemini"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.outcome = "error"
                    self._log(logging.ERROR, "bridge task %s failed", task.get_name(), exc_info=task.exception())
        finally:
            self.ending = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for link in (self.link, self.old_link):
                if link is not None:
                    await link.ws.close()
            await self._finish()

    async def _finish(self) -> None:
        node, call_id = self.node, self.record.call_id
        for turn in self.conv.finish(time.time()):
            self._store_turn(turn)
        figures = self.conv.figures()
        node.writer.submit("figures", lambda: node.store.update_call(call_id, time.time(), figures=figures))
        if self.browser:  # no Twilio status callback will ever say a browser call is over
            done = StatusEvent(CallStatus.COMPLETED, time.time(), None, "media")
            node.writer.submit("completed", lambda: node.store.apply_status(call_id, done, done.at))
        await self.twilio.close(1000, "call ended")
        self._log(logging.INFO, "ended (%s): %s", self.outcome, figures)

    # --- Twilio -> Gemini -----------------------------------------------------------------------------------
    async def _from_twilio(self) -> None:
        while True:
            frame = await self.twilio.receive_frame()
            if frame is None:
                self._log(logging.INFO, "Twilio closed the stream")
                return
            self.last_frame_at = time.monotonic()
            for event in self.stream.receive(frame):
                if isinstance(event, CallerAudio):
                    self.conv.caller_audio(len(event.ulaw))
                    await self._to_gemini(self.audio.caller_to_gemini(event.ulaw))
                elif isinstance(event, MarkEchoed):
                    self.playback.echoed(event.name)
                elif isinstance(event, Dtmf):
                    await self._send_gemini(self.session.text(f"[The caller pressed the {event.digit} key.]"))
                elif isinstance(event, Stopped):
                    self._log(logging.INFO, "Twilio sent stop")
                    return
                elif isinstance(event, Rejected):
                    self._frame_error(event)

    async def _to_gemini(self, pcm16k: bytes) -> None:
        if not self.ready or self.link is None:
            self.unsent.append(pcm16k)  # at most 1 s; older audio is dropped, the caller hears nothing odd
            return
        await self._send_gemini(self.session.audio(pcm16k), pcm16k)

    async def _send_gemini(self, frame: str, pcm16k: bytes | None = None) -> None:
        if self.link is None or not self.ready:
            return
        try:
            await self.link.ws.send(frame)
        except websockets.ConnectionClosed:
            self.ready = False  # the reader notices the close and reconnects
            if pcm16k is not None:
                self.unsent.append(pcm16k)

    # --- Gemini -> Twilio -----------------------------------------------------------------------------------
    async def _from_gemini(self) -> None:
        try:
            await self._connect(resume=False, greet=True)
        except GeminiUnavailable as exc:
            await self._fail(str(exc))
            return
        while True:
            link, frame = await self.inbox.get()
            if link is not self.link and link is not self.old_link:
                continue
            if frame is None:
                if link is self.old_link:
                    self.old_link = None
                    continue
                if self.ending:
                    return
                if not await self._recover(link.closed_reason or "closed"):
                    return
                continue
            for event in self.session.receive(frame):
                await self._on_gemini(event, link)

    async def _on_gemini(self, event: GeminiEvent, link: GeminiLink) -> None:
        if isinstance(event, AgentAudio):
            frames = self.audio.gemini_to_caller(event.pcm24)
            if frames:
                await self._play(frames)
        elif isinstance(event, Interrupted):
            await self._barge_in()
        elif isinstance(event, OutputTranscript):
            self._store_turns(self.conv.agent_said(event.text, time.time()))
        elif isinstance(event, InputTranscript):
            self.last_activity_at = time.monotonic()
            self._store_turns(self.conv.caller_said(event.text, time.time()))
        elif isinstance(event, GenerationComplete | TurnComplete):
            tail = self.audio.flush_caller()
            if tail:
                await self._play(tail)
            if isinstance(event, TurnComplete):
                self.turns_done += 1
                self._store_turns(self.conv.agent_done(time.time()))
                self.playback.new_turn()
                if link is self.old_link:  # the old session finished its reply: let it go
                    self.old_link = None
                    await link.ws.close()
        elif isinstance(event, ToolCall):
            await self._tool_call(event)
        elif isinstance(event, GoAway):
            self._log(logging.INFO, "Gemini goAway (%.0f s left): switching session", event.time_left_s)
            asyncio.create_task(self._switch(), name="gemini-switch")  # noqa: RUF006 - awaited via inbox
        elif isinstance(event, Malformed):
            self.node.metrics.frame_errors.labels(side="gemini").inc()
            self._log(logging.WARNING, "Gemini frame ignored: %s", event.reason)

    async def _play(self, ulaw: bytes) -> None:
        """Queue agent audio at Twilio (whole 20 ms frames) and a mark to learn when it was heard."""
        now = time.monotonic()
        if self.conv.first_audio_at is None:
            self.node.metrics.first_audio.observe(now - self.conv.answered_at)
        self.conv.agent_audio(len(ulaw), now)
        self.last_activity_at = now
        await self.twilio.send(self.stream.media(ulaw))
        await self.twilio.send(self.stream.mark(self.playback.sent(len(ulaw))))

    async def _barge_in(self) -> None:
        self.audio.reset_outbound()  # drop what we hold before anything else
        await self.twilio.send(self.stream.clear())
        self.playback.interrupt()
        self._store_turns(self.conv.interrupted(time.time(), self.playback.heard_fraction()))
        self.playback.new_turn()
        self.node.metrics.barge_ins.inc()

    # --- small things ---------------------------------------------------------------------------------------
    def _store_turns(self, turns: list[TranscriptTurn]) -> None:
        for turn in turns:
            self._store_turn(turn)

    def _store_turn(self, turn: TranscriptTurn) -> None:
        store, call_id = self.node.store, self.record.call_id
        self.node.writer.submit("turn", lambda: store.add_turn(call_id, turn))

    def _frame_error(self, event: Rejected) -> None:
        self.node.metrics.frame_errors.labels(side="twilio").inc()
        self._log(logging.WARNING, "Twilio frame ignored: %s", event.reason)
