"""From an accepted socket to an admitted call: the first frames, the checks, the slot, the claim.

Before this succeeds a socket is only *pending* (admission.py): it has `START_TIMEOUT_S` and a few frames to show
its `start`; frames it sends before that are not logged one by one. Then, in order: the upgrade signature (phone
calls), the token (no store read before it), the record, a call slot, and the store's conditional `claim_stream`,
done here and awaited, so of any number of `start`s with one token exactly one is ever bridged, during or after
the call. Every refusal is a `StreamRefused` with a short code; nothing here opens a Gemini session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from call_state.async_store import AsyncCallStore
from call_state.record import CallRecord
from call_state.store import CallNotFound, StreamAlreadyClaimed
from media_node.admission import MAX_BYTES_BEFORE_START, MAX_FRAMES_BEFORE_START, START_TIMEOUT_S, Admission
from media_node.call_context import CallContext
from media_node.stream_auth import StreamGate, StreamRefused
from media_node.twilio_socket import TwilioSocket
from media_node.twilio_stream import Rejected, Started, TwilioStream


@dataclass(frozen=True)
class AdmittedStream:
    stream: TwilioStream  # the codec, already past `start`
    started: Started
    record: CallRecord


class StreamIntake:
    def __init__(
        self,
        gate: StreamGate,
        store: AsyncCallStore,
        admission: Admission,
        node_id: str,
        ctx: CallContext,
        browser: bool,
    ) -> None:
        self._gate, self._store, self._admission, self._node_id = gate, store, admission, node_id
        self._ctx, self._browser = ctx, browser

    async def admit(self, socket: TwilioSocket, headers: Mapping[str, str]) -> AdmittedStream:
        """The admitted stream with a reserved call slot (release it with `Admission.call_ended`)."""
        if not self._browser:  # a browser has no Twilio signature: its Origin was checked at the upgrade
            self._gate.check_upgrade(headers)
        stream = TwilioStream()
        started = await self._wait_for_start(socket, stream)
        call_id = self._gate.verify_token(started, self._ctx.clock())
        self._ctx.bind(call_id, "-")
        record = self._gate.check_record(started, await self._store.get_call(call_id, self._ctx.clock()), self._browser)
        self._ctx.bind(call_id, record.call_sid)
        refusal = self._admission.reserve_call(record.created_at)
        if refusal is not None:
            raise StreamRefused(refusal.replace(" ", "_"), refusal, close_code=1013)
        try:
            await self._store.claim_stream(call_id, started.stream_sid, self._node_id, self._ctx.clock())
        except BaseException as exc:
            self._admission.call_ended()
            if isinstance(exc, StreamAlreadyClaimed):
                raise StreamRefused("replayed", "this call's stream token was already used") from None
            if isinstance(exc, CallNotFound):
                raise StreamRefused("unknown_call", "the call expired") from None
            if isinstance(exc, Exception):  # the store is down: single use cannot be proved, so refuse
                raise StreamRefused("store_error", f"could not claim the stream: {type(exc).__name__}") from exc
            raise
        return AdmittedStream(stream, started, record)

    async def _wait_for_start(self, socket: TwilioSocket, stream: TwilioStream) -> Started:
        frames = size = 0
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while True:
                    frame = await socket.receive_frame()
                    if frame is None:
                        raise StreamRefused("closed_before_start", "the socket closed before `start`")
                    frames, size = frames + 1, size + len(frame)
                    if frames > MAX_FRAMES_BEFORE_START or size > MAX_BYTES_BEFORE_START:
                        raise StreamRefused("junk_before_start", f"{frames} frames / {size} bytes before `start`")
                    for event in stream.receive(frame):
                        if isinstance(event, Started):
                            return event
                        if isinstance(event, Rejected):
                            self._ctx.frame_error("twilio", event.reason)
                            if event.fatal:
                                raise StreamRefused("bad_start", event.reason)
        except TimeoutError:
            raise StreamRefused("no_start", f"no `start` within {START_TIMEOUT_S:.0f} s") from None
