"""User routes that read calls or end one (placing one is lambda_api/make_call.py). All need the bearer API key."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from call_state.record import CallRecord
from call_state.twilio_rest import TwilioError
from lambda_api.auth import require_api_key
from lambda_api.context import ControlContext, ctx_of
from lambda_api.errors import ApiError

log = logging.getLogger(__name__)
router = APIRouter()


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
