"""`POST /make-call`: the checks, in the order clients rely on, then one dial.

API key (401) -> body and agent actions (400 / 413 / 422) -> destination and transfer_to (403) -> Idempotency-Key
(a replay answers here; 409 for a key reused with another body) -> the URLs of tools and webhook_url (503 without
WEBHOOK_SECRET, 422 for a destination the policy refuses: checked after the key, as they resolve DNS) ->
configuration and media plane (503 with Retry-After: draining, not configured, no node, at capacity) -> optional
pacing (429) -> the dial (lambda_api/dialer.py). Nothing is dialled before every check has passed, and a key is
released again whenever nothing was dialled.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from call_state.agent_actions import CallActions
from call_state.nodes import PlaneState
from lambda_api.auth import public_base, require_api_key
from lambda_api.context import ControlContext, ctx_of
from lambda_api.dialer import Dialer
from lambda_api.errors import ApiError
from lambda_api.idempotency import KeyClaim
from lambda_api.limits import parse_json_object
from lambda_api.schemas import MakeCallRequest

router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)
_KEY_HEADER = re.compile(r"[\x21-\x7e]{1,200}")  # printable ASCII, no spaces
_PLANE_CODES = {
    PlaneState.DRAINING: "draining",
    PlaneState.NOT_CONFIGURED: "not_configured",
    PlaneState.UNAVAILABLE: "media_plane_unavailable",
    PlaneState.FULL: "at_capacity",
}


def new_call_id() -> str:
    return "c_" + secrets.token_hex(12)


def parse_body(raw: bytes, model: type[Body]) -> Body:
    """The JSON body validated as `model`: 400 not a JSON object (or too deep), 422 naming the first bad field."""
    data = parse_json_object(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{field}: {first['msg']}", field=field) from None


def idempotency_header(request: Request) -> str:
    value = request.headers.get("idempotency-key", "").strip()
    if value and not _KEY_HEADER.fullmatch(value):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-200 printable ASCII characters")
    return value


def actions_of(body: MakeCallRequest) -> CallActions:
    """The call's agent actions, or 422 naming the field that is wrong."""
    try:
        return body.actions()
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise ApiError(422, "invalid_request", str(exc), field=field) from None


async def check_urls(ctx: ControlContext, actions: CallActions) -> None:
    """503 without WEBHOOK_SECRET (our requests are signed), 422 for a URL the destination policy refuses now."""
    if not actions.urls:
        return
    client = ctx.outbound
    if client is None:
        raise ApiError(503, "not_configured", "not configured, missing: WEBHOOK_SECRET (tools and webhook_url are "
                       "signed with it)", retry_after=60)  # fmt: skip
    fields = [f"tools.{i}.url" for i in range(len(actions.tools))] + (["webhook_url"] if actions.webhook_url else [])
    reasons = await asyncio.gather(*(client.check(url) for url in actions.urls))
    for field, reason in zip(fields, reasons, strict=True):
        if reason:
            raise ApiError(422, "url_not_allowed", f"{field}: {reason}", field=field)


async def admit(ctx: ControlContext, api_key: str) -> int:
    """The media plane's usable capacity, once configuration, the media plane and pacing all allow a dial."""
    missing = ctx.control_missing()
    if missing:
        raise ApiError(503, "not_configured", f"not configured, missing: {', '.join(missing)}", retry_after=60)
    return await media_plane_admission(ctx, api_key)


async def media_plane_admission(ctx: ControlContext, api_key: str) -> int:
    """503 unless the media plane would bridge a new call now; 429 past MAKE_CALL_RATE_PER_MIN; else its room."""
    now = ctx.clock()
    admission = await ctx.media_plane.admission(now)
    if not admission.ok:
        raise ApiError(503, _PLANE_CODES[admission.state], admission.message, retry_after=admission.retry_after,
                       media_plane=admission.state.value)  # fmt: skip
    wait = await ctx.pacing.wait_seconds(api_key, now)
    if wait:
        raise ApiError(429, "rate_limited", f"MAKE_CALL_RATE_PER_MIN is {ctx.pacing.per_minute} per API key",
                       retry_after=wait)  # fmt: skip
    return admission.capacity


@router.post("/make-call", status_code=201)
async def make_call(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    api_key = require_api_key(request, ctx)
    body = parse_body(await request.body(), MakeCallRequest)
    actions = actions_of(body)
    if not ctx.settings.is_destination_allowed(body.destination_number):
        raise ApiError(403, "destination_not_allowed", "destination_number is not in ALLOWED_DESTINATIONS")
    if actions.transfer_to and not ctx.settings.is_destination_allowed(actions.transfer_to):
        raise ApiError(403, "transfer_not_allowed", "transfer_to is not in ALLOWED_DESTINATIONS")
    header = idempotency_header(request)
    call_id, claim = new_call_id(), None
    if header:
        body_hash = hashlib.sha256(body.canonical().encode()).hexdigest()
        got = await ctx.keys.claim(api_key, header, body_hash, call_id)
        if not isinstance(got, KeyClaim):
            return JSONResponse(got, status_code=201)  # the first request's answer, replayed
        call_id, claim = got.call_id, got
    try:
        await check_urls(ctx, actions)
        capacity = await admit(ctx, api_key)
    except BaseException:
        if claim is not None:
            await ctx.keys.release(claim)
        raise
    answer = await Dialer(ctx).dial(call_id, body, actions, public_base(request, ctx), capacity, claim)
    return JSONResponse(answer, status_code=201)
