"""Placing one outbound call: the record (within the media plane's capacity), then Twilio, then what Twilio said.

The order is what makes "never dial twice" and "nothing lost" hold:
1. the record is created first, counted against the live calls the media plane can hold (NoCapacity -> 503);
2. with an Idempotency-Key, the key moves to `dialling` just before Twilio is asked (if another request took it
   over meanwhile, this one does not dial);
3. Twilio refused -> the record says failed, the key is released (a retry may dial); no answer from Twilio (a
   timeout after the request was sent) -> the outcome is unknown, so the key stays `dialling` and the client gets
   504 with the call id; Twilio's own status callbacks then tell the record what happened;
4. Twilio accepted -> the call SID, the status and the key's answer are written with retries; the client gets
   201 even if the store is failing (the call is placed: an error would invite a second dial).
"""

from __future__ import annotations

import logging
from typing import Any

from call_state.agent_actions import CallActions
from call_state.ids import is_call_sid
from call_state.nodes import RING_TIMEOUT_SECONDS, live_window_seconds
from call_state.record import AgentSettings, CallRecord, CallStatus, Direction, StatusEvent
from call_state.settings import Settings
from call_state.status_rules import parse_twilio_status
from call_state.store import CallExists, NoCapacity
from call_state.twilio_rest import TwilioError
from lambda_api.context import ControlContext
from lambda_api.errors import ApiError
from lambda_api.idempotency import KeyClaim, answer_of
from lambda_api.persist import persist
from lambda_api.schemas import AgentRequest, MakeCallRequest

log = logging.getLogger(__name__)
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


def agent_settings(body: AgentRequest, s: Settings) -> AgentSettings:
    """The agent fields of a request body (None = not given), else the server defaults."""
    return AgentSettings(
        system_prompt=body.system_prompt or s.agent_system_prompt,
        greeting=body.greeting or s.agent_greeting,
        voice=body.voice or s.agent_voice,
        language=body.language or s.agent_language,
    )


def outbound_record(
    ctx: ControlContext, call_id: str, body: MakeCallRequest, actions: CallActions, now: float
) -> CallRecord:
    s = ctx.settings
    agent = agent_settings(body, s)
    return CallRecord(
        call_id=call_id,
        direction=Direction.OUTBOUND,
        to=body.destination_number,
        from_=s.twilio_phone_number,
        agent=agent,
        created_at=now,
        expires_at=int(now) + s.call_ttl_days * 86400,
        metadata=body.metadata or {},
        status_history=(StatusEvent(CallStatus.CREATED, now, None, "api"),),
        actions=actions,
    )


def dial_form(
    ctx: ControlContext, call_id: str, body: MakeCallRequest, actions: CallActions, base: str
) -> dict[str, str | list[str]]:
    """Twilio's Calls.json form. `voicemail` asks for async answering machine detection that waits for the beep
    (DetectMessageEnd), `machine_detection` for the quick kind (Enable) only to record `answered_by`; both report
    to /amd/{call_id}. `record` asks for a dual-channel recording reported to /recording/{call_id}."""
    s = ctx.settings
    form: dict[str, str | list[str]] = {
        "To": body.destination_number,
        "From": s.twilio_phone_number,
        "Url": f"{base}/twiml/{call_id}",
        "Method": "POST",
        "StatusCallback": f"{base}/status/{call_id}",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": STATUS_EVENTS,
        "Timeout": str(RING_TIMEOUT_SECONDS),
        "TimeLimit": str(s.max_call_seconds),
    }
    if actions.voicemail is not None or body.machine_detection:
        form.update({
            "MachineDetection": "DetectMessageEnd" if actions.voicemail is not None else "Enable",
            "AsyncAmd": "true",
            "AsyncAmdStatusCallback": f"{base}/amd/{call_id}",
            "AsyncAmdStatusCallbackMethod": "POST",
        })  # fmt: skip
    if actions.record:
        form.update({
            "Record": "true",
            "RecordingChannels": "dual",
            "RecordingStatusCallback": f"{base}/recording/{call_id}",
            "RecordingStatusCallbackMethod": "POST",
            "RecordingStatusCallbackEvent": "completed",
        })  # fmt: skip
    return form


class Dialer:
    def __init__(self, ctx: ControlContext) -> None:
        self.ctx = ctx

    async def dial(
        self,
        call_id: str,
        body: MakeCallRequest,
        actions: CallActions,
        base: str,
        capacity: int,
        claim: KeyClaim | None,
    ) -> dict[str, Any]:
        ctx = self.ctx
        now = ctx.clock()
        try:
            record = outbound_record(ctx, call_id, body, actions, now)
            await self._record(record, capacity, resumed=claim is not None)
            if claim is not None and not await ctx.keys.mark_dialling(claim):
                await self._cancel(call_id, "not dialled: a retry with the same Idempotency-Key took over")
                raise ApiError(409, "in_progress", "a request with this Idempotency-Key is still in progress",
                               retry_after=1)  # fmt: skip
        except BaseException:
            if claim is not None:
                await ctx.keys.release(claim)  # nothing was dialled
            raise
        try:
            created = await ctx.twilio.create_call(dial_form(ctx, call_id, body, actions, base))
        except TwilioError as exc:
            raise await self._refused_or_unknown(call_id, exc, claim) from None
        sid = created.get("sid")
        call_sid = sid if isinstance(sid, str) and is_call_sid(sid) else ""  # else Twilio's callbacks bring it
        status = parse_twilio_status(str(created.get("status", "queued"))) or CallStatus.QUEUED
        log.info("call %s (%s): dialling %s", call_id, call_sid, body.destination_number[:4] + "…")
        answer = answer_of(call_id, call_sid, status.value)
        at = ctx.clock()
        await persist("call SID", call_id, lambda: ctx.store.update_call(call_id, at, call_sid=call_sid))
        await persist(
            "status", call_id, lambda: ctx.store.apply_status(call_id, StatusEvent(status, at, None, "api"), at)
        )
        if claim is not None:
            await ctx.keys.complete(claim, answer)
        return answer

    async def _record(self, record: CallRecord, capacity: int, *, resumed: bool) -> None:
        since = record.created_at - live_window_seconds(self.ctx.settings.max_call_seconds)
        try:
            await self.ctx.store.create_call(record, max_live=capacity, live_since=since)
        except NoCapacity:
            raise ApiError(503, "at_capacity", f"the media plane holds its {capacity} live calls",
                           retry_after=10, media_plane="full") from None  # fmt: skip
        except CallExists:
            if not resumed:  # a fresh random id that exists: never overwrite another call
                raise
            # A retry taking over a claim whose holder stored the record, then died before dialling: reuse it.

    async def _cancel(self, call_id: str, why: str) -> None:
        now = self.ctx.clock()
        event = StatusEvent(CallStatus.CANCELED, now, None, "api", why)
        await persist("status", call_id, lambda: self.ctx.store.apply_status(call_id, event, now))

    async def _refused_or_unknown(self, call_id: str, exc: TwilioError, claim: KeyClaim | None) -> ApiError:
        """Record what Twilio's failure means for the call and the key; the error to answer with."""
        ctx, now = self.ctx, self.ctx.clock()
        if exc.maybe_done:
            log.error("call %s: no answer from Twilio (%s): the dial may have been placed", call_id, exc.message)
            error = f"dial outcome unknown: {exc.message}"[:1000]
            await persist("error", call_id, lambda: ctx.store.update_call(call_id, now, error=error))
            return ApiError(504, "twilio_timeout", "Twilio did not answer: the call may have been placed; "
                            "GET /calls/{call_id} shows what happened (retry only with the same Idempotency-Key)",
                            call_id=call_id)  # fmt: skip
        log.warning("call %s: Twilio refused: %s %s", call_id, exc.code, exc.message)
        detail = f"twilio {exc.code}: {exc.message}"[:500]
        failed = StatusEvent(CallStatus.FAILED, now, None, "api", detail)
        await persist("status", call_id, lambda: ctx.store.apply_status(call_id, failed, now))
        error = f"Twilio {exc.code}: {exc.message}"[:1000]
        await persist("error", call_id, lambda: ctx.store.update_call(call_id, now, error=error))
        await persist("end of call", call_id, lambda: ctx.end_of_call.status_done(call_id, now))  # no stream: over
        if claim is not None:
            await ctx.keys.release(claim)  # Twilio said no: nothing was dialled, a retry may try again
        return ApiError(502, "twilio_error", exc.message, twilio_code=exc.code, twilio_status=exc.status)
