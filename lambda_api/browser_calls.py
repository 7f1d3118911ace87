"""`POST /browser-calls`: a call from the web console's microphone, bridged like a phone call but without Twilio.

The page gets a call record (`direction: "browser"`), the media node's `/browser-stream` URL and a one-use
stream token; it then speaks the Twilio Media Streams protocol itself (`connected`, `start` with `call_id` and
`token` in `customParameters`, 20 ms mu-law `media`, `mark` echoes, `stop`). The node checks the page's `Origin`
at the upgrade and the token in `start`, runs the same bridge, and writes `completed` when the page hangs up.
"""

from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from call_state.nodes import live_window_seconds
from call_state.record import CallRecord, CallStatus, Direction, StatusEvent
from call_state.store import NoCapacity
from lambda_api.auth import require_api_key
from lambda_api.context import ctx_of
from lambda_api.dialer import agent_settings
from lambda_api.errors import ApiError
from lambda_api.make_call import media_plane_admission, parse_body
from lambda_api.schemas import AgentRequest

log = logging.getLogger(__name__)
router = APIRouter()
BROWSER = "browser"  # what `to`/`from` say on a browser call's record: there is no phone number


def browser_stream_url(media_stream_url: str) -> str:
    """`wss://media.example.com/stream` -> `wss://media.example.com/browser-stream` (last path segment swapped)."""
    parts = urlsplit(media_stream_url)
    base = parts.path.rstrip("/").rpartition("/")[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{base}/browser-stream", "", ""))


@router.post("/browser-calls", status_code=201)
async def create_browser_call(request: Request) -> JSONResponse:
    ctx = ctx_of(request)
    key = require_api_key(request, ctx)
    tokens = ctx.tokens
    missing = [] if ctx.settings.gemini_api_key else ["GEMINI_API_KEY"]
    missing += [] if tokens else ["STREAM_TOKEN_SECRET"]
    if missing or tokens is None:  # say what is missing rather than open a stream that cannot work
        raise ApiError(503, "not_configured", f"not configured, missing: {', '.join(missing)}")
    body = parse_body(await request.body(), AgentRequest)
    # The same gate as a dial: a draining or full media plane gets no new call, and MAKE_CALL_RATE_PER_MIN (when
    # set) paces browser calls too (each opens a paid Gemini session).
    capacity = await media_plane_admission(ctx, key)
    now, s = ctx.clock(), ctx.settings
    call_id = "c_" + secrets.token_hex(12)
    record = CallRecord(
        call_id=call_id,
        direction=Direction.BROWSER,
        to=BROWSER,
        from_=BROWSER,
        agent=agent_settings(body, s),
        created_at=now,
        expires_at=int(now) + s.call_ttl_days * 86400,
        metadata=body.metadata or {},
        status_history=(StatusEvent(CallStatus.CREATED, now, None, "api"),),
    )
    try:
        await ctx.store.create_call(record, max_live=capacity, live_since=now - live_window_seconds(s.max_call_seconds))
    except NoCapacity:
        raise ApiError(503, "at_capacity", f"the media plane holds its {capacity} live calls", retry_after=10,
                       media_plane="full") from None  # fmt: skip
    log.info("call %s (-): browser call created", call_id)
    stream_url = browser_stream_url(s.media_stream_url)
    answer = {"call_id": call_id, "stream_url": stream_url, "token": tokens.mint(call_id, now)}
    return JSONResponse(answer, status_code=201, headers={"Cache-Control": "no-store"})  # the token is a secret
