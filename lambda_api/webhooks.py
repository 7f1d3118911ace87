"""Twilio webhooks: TwiML when a call is answered, status callbacks, stream status, inbound calls.

Every request is signature-checked first (403 otherwise). Unknown or expired calls still get a 2xx (a hang-up
TwiML, or an empty answer) so Twilio does not retry or play an error to the callee.
"""

from __future__ import annotations

import logging
import secrets

from fastapi import APIRouter, Request, Response

from call_state.numbers import ascii_int
from call_state.record import AgentSettings, CallRecord, CallStatus, Direction, StatusEvent, StreamEvent
from call_state.status_rules import parse_twilio_status
from call_state.store import CallNotFound
from lambda_api.auth import public_base, twilio_form
from lambda_api.calls import ctx_of
from lambda_api.context import ControlContext
from lambda_api.errors import ApiError
from lambda_api.twiml import connect_stream, hang_up

log = logging.getLogger(__name__)
router = APIRouter()
XML = "application/xml"


def _text(form: object, name: str, limit: int = 200) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value[:limit] if isinstance(value, str) else ""


def _stream_twiml(request: Request, ctx: ControlContext, call_id: str) -> Response:
    tokens = ctx.tokens
    if tokens is None:
        raise ApiError(503, "not_configured", "STREAM_TOKEN_SECRET is not set")
    s = ctx.settings
    status_url = f"{public_base(request, ctx)}/stream-status/{call_id}"
    twiml = connect_stream(s.media_stream_url, status_url, call_id,
                           tokens.mint(call_id, ctx.clock()))  # fmt: skip
    return Response(twiml, media_type=XML)


@router.post("/twiml/{call_id}")
async def answer(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    record = await ctx.store.get_call(call_id[:128], ctx.clock())
    if record is None:
        log.warning("call %s (%s): TwiML asked for an unknown call: hanging up", call_id, _text(form, "CallSid"))
        return Response(hang_up(), media_type=XML)
    log.info("call %s (%s): answered, connecting the stream", call_id, _text(form, "CallSid"))
    return _stream_twiml(request, ctx, call_id)


@router.post("/status/{call_id}", status_code=204)
async def status(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    reported = parse_twilio_status(_text(form, "CallStatus"))
    call_sid = _text(form, "CallSid")
    if reported is None:
        return Response(status_code=204)
    seq_text = _text(form, "SequenceNumber")
    details = [f"{k}={_text(form, k)}" for k in ("SipResponseCode", "CallDuration", "AnsweredBy", "ErrorCode")
               if _text(form, k)]  # fmt: skip
    event = StatusEvent(reported, ctx.clock(), ascii_int(seq_text), "twilio",
                        " ".join(details)[:500])  # fmt: skip
    try:
        update = await ctx.store.apply_status(call_id[:128], event, ctx.clock())
        if call_sid.startswith("CA"):
            record = await ctx.store.get_call(call_id[:128], ctx.clock())
            if record is not None and not record.call_sid:
                await ctx.store.update_call(call_id, ctx.clock(), call_sid=call_sid)
    except CallNotFound:
        log.warning("call %s (%s): status %s for an unknown call", call_id, call_sid, reported.value)
        return Response(status_code=204)
    log.info("call %s (%s): %s -> %s", call_id, call_sid, reported.value, update.status.value)
    return Response(status_code=204)


@router.post("/stream-status/{call_id}", status_code=204)
async def stream_status(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    event = StreamEvent(_text(form, "StreamEvent", 40) or "unknown", ctx.clock(), _text(form, "StreamSid", 64),
                        _text(form, "StreamError", 1000))  # fmt: skip
    try:
        await ctx.store.add_stream_event(call_id[:128], event)
    except CallNotFound:
        return Response(status_code=204)
    level = logging.WARNING if event.error else logging.INFO
    log.log(level, "call %s (%s): %s %s", call_id, _text(form, "CallSid"), event.event, event.error)
    return Response(status_code=204)


@router.post("/incoming")
async def incoming(request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    s, now = ctx.settings, ctx.clock()
    call_id = "c_" + secrets.token_hex(12)
    call_sid = _text(form, "CallSid", 64)
    record = CallRecord(
        call_id=call_id,
        direction=Direction.INBOUND,
        to=_text(form, "To", 64),
        from_=_text(form, "From", 64),
        agent=AgentSettings(s.agent_system_prompt, s.agent_greeting, s.agent_voice, s.agent_language),
        created_at=now,
        expires_at=int(now) + s.call_ttl_days * 86400,
        call_sid=call_sid,
        status_history=(StatusEvent(CallStatus.CREATED, now, None, "api"),),
    )
    await ctx.store.create_call(record)
    reported = parse_twilio_status(_text(form, "CallStatus"))
    if reported is not None:
        await ctx.store.apply_status(call_id, StatusEvent(reported, now, None, "twilio"), now)
    log.info("call %s (%s): inbound call", call_id, call_sid)
    return _stream_twiml(request, ctx, call_id)
