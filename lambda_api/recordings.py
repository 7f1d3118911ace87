"""`GET /calls/{call_id}/recording?format=wav|mp3`: the call's recording, fetched from Twilio with our credentials,
so users never need the Twilio console or the account's auth token.

The audio is streamed through (64 KiB at a time) and bounded: at most `MAX_RECORDING_BYTES` (a 4-hour dual-channel
WAV is ~460 MB). Under Lambda the answer must fit Lambda's 6 MB response payload once base64-encoded, so it is
read first and refused above `LAMBDA_MAX_BYTES` (502 `recording_too_large`: ask for `format=mp3`, several times
smaller, or use the all-in-one server). 404 when the call is unknown or has no recording (yet).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from call_state.twilio_rest import TwilioError
from lambda_api.auth import require_api_key
from lambda_api.context import ctx_of
from lambda_api.errors import ApiError

log = logging.getLogger(__name__)
router = APIRouter()
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg"}
MAX_RECORDING_BYTES = 600 * 2**20
LAMBDA_MAX_BYTES = 4_300_000  # 6 MB payload limit, base64 (4/3) and the response's JSON around it
CHUNK_BYTES = 64 * 1024


class RecordingTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(502, "recording_too_large", f"the recording is over {limit} bytes, the most this server "
                         "can pass on; ask for format=mp3 (much smaller)")  # fmt: skip


def _declared_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 16 else None


async def _read_all(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            data += chunk
            if len(data) > limit:
                raise RecordingTooLarge(limit)
    finally:
        await response.aclose()
    return bytes(data)


async def _stream(response: httpx.Response, limit: int, call_id: str) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            sent += len(chunk)
            if sent > limit:  # no Content-Length was promised: the client sees a cut download
                log.error("call %s: recording over %d bytes: download cut", call_id, limit)
                return
            yield chunk
    finally:
        await response.aclose()


@router.get("/calls/{call_id}/recording", response_model=None)
async def download(
    call_id: str, request: Request, audio_format: str = Query("wav", alias="format", pattern="^(wav|mp3)$")
) -> Response:
    ctx = ctx_of(request)
    require_api_key(request, ctx)
    record = await ctx.store.get_call(call_id[:128], ctx.clock())
    if record is None:
        raise ApiError(404, "not_found", "no such call")
    if record.recording is None:
        raise ApiError(404, "no_recording", "the call has no recording (it was not asked for, or Twilio has not "
                       "reported it yet: that takes a few seconds after the call ends)")  # fmt: skip
    try:
        response = await ctx.twilio.open_recording(record.recording.sid, audio_format)
    except TwilioError as exc:
        log.warning("call %s (%s): recording %s not fetched: %s %s", record.call_id, record.call_sid,
                    record.recording.sid, exc.status, exc.message[:200])  # fmt: skip
        if exc.status == 404:
            raise ApiError(404, "no_recording", "Twilio has no such recording (deleted?)") from None
        raise ApiError(502, "twilio_error", exc.message, twilio_code=exc.code, twilio_status=exc.status) from None
    in_lambda = "aws.event" in request.scope
    limit = LAMBDA_MAX_BYTES if in_lambda else MAX_RECORDING_BYTES
    length = _declared_length(response)
    if length is not None and length > limit:
        await response.aclose()
        raise RecordingTooLarge(limit)
    media_type = CONTENT_TYPES[audio_format]
    headers = {"Content-Disposition": f'attachment; filename="{record.call_id}.{audio_format}"',
               "Cache-Control": "private, no-store"}  # fmt: skip
    if in_lambda:  # Mangum buffers the whole answer anyway
        return Response(await _read_all(response, limit), media_type=media_type, headers=headers)
    if length is not None:
        headers["Content-Length"] = str(length)
    return StreamingResponse(_stream(response, limit, record.call_id), media_type=media_type, headers=headers)
