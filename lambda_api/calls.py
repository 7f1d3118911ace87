"""User routes: place a call, read calls, hang up. All need the bearer API key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from typing import Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from call_state.record import AgentSettings, CallRecord, CallStatus, Direction, StatusEvent
from call_state.settings import Settings
from call_state.status_rules import parse_twilio_status
from call_state.twilio_rest import TwilioError
from lambda_api.auth import public_base, require_api_key
from lambda_api.context import ControlContext
from lambda_api.errors import ApiError
from lambda_api.schemas import AgentRequest, MakeCallRequest

log = logging.getLogger(__name__)
router = APIRouter()
MAX_BODY_BYTES = 32 * 1024
IDEMPOTENCY_TTL_S = 24 * 3600
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]
Body = TypeVar("Body", bound=BaseModel)


def ctx_of(request: Request) -> ControlContext:
    ctx: ControlContext = request.app.state.ctx
    return ctx


async def parse_body(request: Request, model: type[Body]) -> Body:
    """The JSON body validated as `model`: 413 too large, 400 not a JSON object, 422 naming the first bad field."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "invalid_json", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{field}: {first['msg']}", field=field) from None


@router.post("/make-call", status_code=201)
async def make_call(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    missing = [n for n in ctx.settings.missing_credentials() if n.startswith("TWILIO_") or n == "API_KEY"]
    if missing or ctx.tokens is None:  # say what is missing rather than fail later
        missing += [] if ctx.tokens else ["STREAM_TOKEN_SECRET"]
        raise ApiError(503, "not_configured", f"not configured, missing: {', '.join(missing)}")
    key = require_api_key(request, ctx)
    body = await parse_body(request, MakeCallRequest)
    if not ctx.settings.is_destination_allowed(body.destination_number):
        raise ApiError(403, "destination_not_allowed", "destination_number is not in ALLOWED_DESTINATIONS")
    idem = request.headers.get("idempotency-key", "").strip()
    if len(idem) > 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is limited to 200 characters")
    call_id = "c_" + secrets.token_hex(12)
    if idem:
        replay = await _claim(ctx, key, idem, body, call_id)
        if replay is not None:
            return JSONResponse(replay, status_code=201)
    wait = ctx.rate_limit.take(key, ctx.clock())
    if wait:
        if idem:
            await ctx.store.release_idempotency_key(_idem_key(key, idem))
        raise ApiError(429, "rate_limited", "one call per second per API key", retry_after=max(1, round(wait)))
    try:
        answer = await _dial(ctx, call_id, body, public_base(request, ctx))
    except BaseException:
        if idem:  # nothing was dialled: let a retry try again
            await ctx.store.release_idempotency_key(_idem_key(key, idem))
        raise
    if idem:
        await ctx.store.complete_idempotency_key(_idem_key(key, idem), answer)
    return JSONResponse(answer, status_code=201)


def _idem_key(api_key: str, idem: str) -> str:
    # Scoped to the API key, and hashed so the stored key reveals neither.
    return hashlib.sha256(f"{api_key}\x00{idem}".encode()).hexdigest()


async def _claim(
    ctx: ControlContext, key: str, idem: str, body: MakeCallRequest, call_id: str
) -> dict[str, Any] | None:
    body_hash = hashlib.sha256(body.canonical().encode()).hexdigest()
    for _ in range(50):  # a concurrent first request is dialling: wait for its answer (up to ~5 s)
        claim = await ctx.store.claim_idempotency_key(
            _idem_key(key, idem), body_hash, call_id, ctx.clock(), IDEMPOTENCY_TTL_S
        )
        if claim.claimed:
            return None
        if claim.body_hash != body_hash:
            raise ApiError(409, "idempotency_key_reused", "Idempotency-Key was used with a different body")
        if claim.response is not None:
            return claim.response
        await asyncio.sleep(0.1)
    raise ApiError(409, "in_progress", "a request with this Idempotency-Key is still in progress")


def agent_settings(body: AgentRequest, s: Settings) -> AgentSettings:
    """The agent fields of a request body (None = not given), else the server defaults."""
    return AgentSettings(
        system_prompt=body.system_prompt or s.agent_system_prompt,
        greeting=body.greeting or s.agent_greeting,
        voice=body.voice or s.agent_voice,
        language=body.language or s.agent_language,
    )


async def _dial(ctx: ControlContext, call_id: str, body: MakeCallRequest, base: str) -> dict[str, Any]:
    s, now = ctx.settings, ctx.clock()
    agent = agent_settings(body, s)
    record = CallRecord(
        call_id=call_id,
        direction=Direction.OUTBOUND,
        to=body.destination_number,
        from_=s.twilio_phone_number,
        agent=agent,
        created_at=now,
        expires_at=int(now) + s.call_ttl_days * 86400,
        metadata=body.metadata or {},
        status_history=(StatusEvent(CallStatus.CREATED, now, None, "api"),),
    )
    await ctx.store.create_call(record)
    form: dict[str, str | list[str]] = {
        "To": body.destination_number,
        "From": s.twilio_phone_number,
        "Url": f"{base}/twiml/{call_id}",
        "Method": "POST",
        "StatusCallback": f"{base}/status/{call_id}",
        "StatusCallbackMethod": "POST",
        "StatusCallbackEvent": STATUS_EVENTS,
        "Timeout": "30",
        "TimeLimit": str(s.max_call_seconds),
    }
    if body.machine_detection:
        form.update({"MachineDetection": "Enable", "AsyncAmd": "true"})
    try:
        created = await ctx.twilio.create_call(form)
    except TwilioError as exc:
        log.warning("call %s: Twilio refused: %s %s", call_id, exc.code, exc.message)
        failed = StatusEvent(CallStatus.FAILED, ctx.clock(), None, "api", f"twilio {exc.code}: {exc.message}"[:500])
        await ctx.store.apply_status(call_id, failed, ctx.clock())
        await ctx.store.update_call(call_id, ctx.clock(), error=f"Twilio {exc.code}: {exc.message}"[:1000])
        raise ApiError(502, "twilio_error", exc.message, twilio_code=exc.code, twilio_status=exc.status) from None
    call_sid = str(created.get("sid", ""))
    status = parse_twilio_status(str(created.get("status", "queued"))) or CallStatus.QUEUED
    await ctx.store.update_call(call_id, ctx.clock(), call_sid=call_sid)
    await ctx.store.apply_status(call_id, StatusEvent(status, ctx.clock(), None, "api"), ctx.clock())
    log.info("call %s (%s): dialling %s", call_id, call_sid, body.destination_number[:4] + "…")
    return {"call_id": call_id, "call_sid": call_sid, "status": status.value}


async def _existing_call(ctx: ControlContext, call_id: str) -> CallRecord:
    record = await ctx.store.get_call(call_id[:128], ctx.clock())
    if record is None:
        raise ApiError(404, "not_found", "no such call")
    return record


@router.get("/calls/{call_id}")
async def get_call(call_id: str, request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    require_api_key(request, ctx)
    record = await _existing_call(ctx, call_id)
    return JSONResponse(record.to_dict())


@router.get("/calls")
async def list_calls(
    request: Request, limit: int = Query(20, ge=1, le=100), cursor: str | None = Query(None, max_length=500)
) -> JSONResponse:
    ctx = ctx_of(request)
    require_api_key(request, ctx)
    try:
        page = await ctx.store.list_calls(ctx.clock(), limit, cursor)
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None
    calls = [{k: v for k, v in c.to_dict().items() if k not in ("transcript", "stream_events")} for c in page.calls]
    return JSONResponse({"calls": calls, "next_cursor": page.next_cursor})


@router.post("/calls/{call_id}/hangup")
async def hangup(call_id: str, request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    require_api_key(request, ctx)
    record = await _existing_call(ctx, call_id)
    if not record.call_sid:
        raise ApiError(409, "not_dialled", "the call has no Twilio call SID yet")
    if record.status.is_terminal:
        return JSONResponse({"call_id": call_id, "status": record.status.value, "hung_up": False})
    try:
        ended = await ctx.twilio.hangup(record.call_sid)
    except TwilioError as exc:
        raise ApiError(502, "twilio_error", exc.message, twilio_code=exc.code, twilio_status=exc.status) from None
    log.info("call %s (%s): hang-up requested", call_id, record.call_sid)
    return JSONResponse({"call_id": call_id, "status": record.status.value, "hung_up": ended})
