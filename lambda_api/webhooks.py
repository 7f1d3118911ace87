"""Twilio webhooks: TwiML when a call is answered, status callbacks, stream status, inbound calls (AMD and
recording callbacks: lambda_api/call_events.py). A terminal status is the control plane's side of the end of the
call (call_state/call_end.py: the end-of-call webhook goes out once the media side is done too).

Every request is signature-checked first (403 otherwise; 415 unless urlencoded). Unknown or expired calls get a
2xx (a hang-up TwiML, or an empty answer) so Twilio does not retry or play an error, and store nothing. Replays
are harmless: `/incoming` keys the record on the CallSid, a call whose stream is claimed gets a hang-up TwiML
from `/twiml` (its tokens are dead anyway), status events fold in idempotently. Values from the form are checked
against their formats before they reach the store or a log line; a malformed number is ignored, not an error.
"""

from __future__ import annotations

import hashlib
import logging
import re

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from call_state.ids import CALL_ID, STREAM_SID, loggable
from call_state.nodes import live_window_seconds
from call_state.numbers import ascii_int
from call_state.record import AgentSettings, CallRecord, CallStatus, Direction, StatusEvent, StreamEvent
from call_state.status_rules import parse_twilio_status
from call_state.store import CallExists, CallNotFound, NoCapacity
from lambda_api.auth import public_base, twilio_form
from lambda_api.context import ControlContext, ctx_of
from lambda_api.errors import ApiError
from lambda_api.form_fields import shown, sid, text
from lambda_api.twiml import connect_stream, hang_up, reject_busy

log = logging.getLogger(__name__)
router = APIRouter()
XML = "application/xml"
_PHONE = re.compile(r"\+?[0-9]{1,20}|client:[A-Za-z0-9_.-]{1,64}|sip:[!-~]{1,120}|[A-Za-z0-9 _.-]{1,40}")


def _xml(twiml: str) -> Response:
    return Response(twiml, media_type=XML)


def _stream_twiml(request: Request, ctx: ControlContext, call_id: str) -> Response:
    tokens = ctx.tokens
    if tokens is None:
        raise ApiError(503, "not_configured", "STREAM_TOKEN_SECRET is not set")
    status_url = f"{public_base(request, ctx)}/stream-status/{call_id}"
    token = tokens.mint(call_id, ctx.clock())
    return _xml(connect_stream(ctx.settings.media_stream_url, status_url, call_id, token))


@router.post("/twiml/{call_id}")
async def answer(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    record = await ctx.store.get_call(call_id[:128], ctx.clock())
    if record is None:
        log.warning(
            "call %s (%s): TwiML asked for an unknown call: hanging up", loggable(call_id, CALL_ID), shown(form)
        )
        return _xml(hang_up())
    if record.stream_sid:  # a replay after the stream started: no new token, the call is bridged already
        log.warning("call %s (%s): TwiML asked again after the stream was claimed: hanging up", call_id, shown(form))
        return _xml(hang_up())
    log.info("call %s (%s): answered, connecting the stream", call_id, shown(form))
    return _stream_twiml(request, ctx, call_id)


@router.post("/status/{call_id}", status_code=204)
async def status(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    reported = parse_twilio_status(text(form, "CallStatus"))
    if reported is None:
        return Response(status_code=204)
    call_id, call_sid = call_id[:128], sid(form)
    details = [f"{k}={v}" for k in ("SipResponseCode", "CallDuration", "ErrorCode")
               if (v := ascii_int(text(form, k, 20))) is not None]  # fmt: skip
    if re.fullmatch(r"[a-z_]{1,40}", answered_by := text(form, "AnsweredBy", 40)):
        details.append(f"AnsweredBy={answered_by}")
    now = ctx.clock()
    event = StatusEvent(reported, now, ascii_int(text(form, "SequenceNumber", 20)), "twilio", " ".join(details))
    try:
        update = await ctx.store.apply_status(call_id, event, now)
        if call_sid and not reported.is_terminal:  # early callbacks fill in a SID our own write may have lost
            record = await ctx.store.get_call(call_id, now)
            if record is not None and not record.call_sid:
                await ctx.store.update_call(call_id, now, call_sid=call_sid)
    except CallNotFound:
        log.warning(
            "call %s (%s): status %s for an unknown call", loggable(call_id, CALL_ID), shown(form), reported.value
        )
        return Response(status_code=204)
    log.info("call %s (%s): %s -> %s", call_id, shown(form), reported.value, update.status.value)
    if reported.is_terminal:  # the control plane's side of the end of the call (the webhook, once both are done)
        await ctx.end_of_call.status_done(call_id, now)
    return Response(status_code=204)


@router.post("/stream-status/{call_id}", status_code=204)
async def stream_status(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    name = text(form, "StreamEvent", 40)
    event_name = name if re.fullmatch(r"[a-z-]{1,40}", name) else "unknown"
    event = StreamEvent(event_name, ctx.clock(), sid(form, "StreamSid", STREAM_SID), text(form, "StreamError", 1000))
    try:
        await ctx.store.add_stream_event(call_id[:128], event)
    except CallNotFound:
        log.warning("call %s (%s): stream %s for an unknown call", loggable(call_id, CALL_ID), shown(form), event_name)
        return Response(status_code=204)
    level = logging.WARNING if event.error else logging.INFO
    log.log(level, "call %s (%s): %s %r", call_id, shown(form), event.event, event.error[:200])
    return Response(status_code=204)


def inbound_call_id(call_sid: str) -> str:
    """Derived from the CallSid, so a replayed /incoming finds the record it made the first time."""
    return "c_" + hashlib.sha256(f"inbound\x00{call_sid}".encode()).hexdigest()[:24]


@router.post("/incoming")
async def incoming(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    call_sid = sid(form)
    if not call_sid:
        log.warning("inbound call with CallSid %s: not a Twilio call, hanging up", shown(form))
        return _xml(hang_up())
    s, now = ctx.settings, ctx.clock()
    call_id = inbound_call_id(call_sid)
    admission = await ctx.media_plane.admission(now)
    record = CallRecord(
        call_id=call_id,
        direction=Direction.INBOUND,
        to=_phone(form, "To"),
        from_=_phone(form, "From"),
        agent=AgentSettings(s.agent_system_prompt, s.agent_greeting, s.agent_voice, s.agent_language),
        created_at=now,
        expires_at=int(now) + s.call_ttl_days * 86400,
        call_sid=call_sid,
        status_history=(StatusEvent(CallStatus.CREATED, now, None, "api"),),
        actions=s.default_actions,  # AGENT_TOOLS_FILE, AGENT_TRANSFER_TO, AGENT_WEBHOOK_URL
    )
    try:
        if not admission.ok:
            raise NoCapacity(admission.message)
        since = now - live_window_seconds(s.max_call_seconds)
        await ctx.store.create_call(record, max_live=admission.capacity, live_since=since)
        log.info("call %s (%s): inbound call", call_id, call_sid)
    except NoCapacity as exc:  # the caller hears busy rather than a silent line
        log.warning("call %s (%s): inbound call refused (busy): %s", call_id, call_sid, exc)
        return _xml(reject_busy())
    except CallExists:  # a replay of this webhook
        existing = await ctx.store.get_call(call_id, now)
        if existing is None or existing.stream_sid:
            return _xml(hang_up())
    reported = parse_twilio_status(text(form, "CallStatus"))
    if reported is not None:
        await ctx.store.apply_status(call_id, StatusEvent(reported, now, None, "twilio"), now)
    return _stream_twiml(request, ctx, call_id)


def _phone(form: FormData, name: str) -> str:
    value = text(form, name, 120)
    return value if _PHONE.fullmatch(value) else ""
