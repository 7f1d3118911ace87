"""Twilio's callbacks about the agent actions of a call: answering machine detection and the recording.

- `POST /amd/{call_id}`: async AMD's `AnsweredBy` (asked for by `voicemail`, or `machine_detection`). Written into
  the record's `answered_by`, once: the media node bridging the call watches the record for it (media_node/
  voicemail.py) and leaves the message or hangs up; a replay, or a second answer, changes nothing.
- `POST /recording/{call_id}`: the dual-channel recording is complete. Written into the record's `recording`
  (its SID, our own URL for it, duration, channels); `GET /calls/{id}/recording` serves the audio.

Signed like every webhook (403), urlencoded only (415), bounded (413). Unknown or expired calls and callbacks of
another call (a CallSid that is not the record's) get a 204 and store nothing; values are checked against their
formats before they are stored or logged, and a number that is not ASCII digits is ignored.
"""

from __future__ import annotations

import logging
import re

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from call_state.ids import CALL_ID, loggable
from call_state.numbers import ascii_int
from call_state.record import CallRecord, Recording
from call_state.store import CallNotFound
from call_state.twilio_rest import RECORDING_SID
from lambda_api.auth import twilio_form
from lambda_api.context import ControlContext, ctx_of
from lambda_api.form_fields import shown, sid, text

log = logging.getLogger(__name__)
router = APIRouter()
# DetectMessageEnd answers with the machine_end_* values, Enable with machine_start; both with the other three.
ANSWERED_BY = frozenset({"human", "fax", "unknown", "machine_start", "machine_end_beep", "machine_end_silence",
                         "machine_end_other"})  # fmt: skip
_NAME = re.compile(r"[a-z_-]{1,40}")


async def _record_of(ctx: ControlContext, call_id: str, form: FormData, what: str) -> CallRecord | None:
    """The call's record, unless the call is unknown or the callback names another call's SID."""
    record = await ctx.store.get_call(call_id[:128], ctx.clock())
    if record is None:
        log.warning("call %s (%s): %s for an unknown call", loggable(call_id, CALL_ID), shown(form), what)
        return None
    if record.call_sid and sid(form) != record.call_sid:
        log.warning("call %s (%s): %s from CallSid %s: not this call's, ignored", record.call_id, record.call_sid, what,
                    shown(form))  # fmt: skip
        return None
    return record


@router.post("/amd/{call_id}", status_code=204)
async def amd(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    answered_by = text(form, "AnsweredBy", 40)
    if answered_by not in ANSWERED_BY:
        log.warning("call %s (%s): AMD answer %s ignored", loggable(call_id, CALL_ID), shown(form),
                    loggable(form.get("AnsweredBy"), _NAME))  # fmt: skip
        return Response(status_code=204)
    record = await _record_of(ctx, call_id, form, "AMD result")
    if record is None:
        return Response(status_code=204)
    if record.answered_by:  # a replay, or a second answer: the first one decided what the agent does
        log.info("call %s (%s): AMD said %s again (kept: %s)", record.call_id, record.call_sid, answered_by,
                 record.answered_by)  # fmt: skip
        return Response(status_code=204)
    took_ms = ascii_int(text(form, "MachineDetectionDuration", 20))
    try:
        await ctx.store.update_call(record.call_id, ctx.clock(), answered_by=answered_by)
    except CallNotFound:
        return Response(status_code=204)
    log.info("call %s (%s): answered by %s (detection %s ms)", record.call_id, record.call_sid, answered_by,
             "?" if took_ms is None else took_ms)  # fmt: skip
    return Response(status_code=204)


@router.post("/recording/{call_id}", status_code=204)
async def recording(call_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    form = await twilio_form(request, ctx)
    status, recording_sid = text(form, "RecordingStatus", 40), sid(form, "RecordingSid", RECORDING_SID)
    if status != "completed" or not recording_sid:
        log.warning("call %s (%s): recording callback %s (RecordingSid %s) ignored", loggable(call_id, CALL_ID),
                    shown(form), loggable(status, _NAME), shown(form, "RecordingSid", RECORDING_SID))  # fmt: skip
        return Response(status_code=204)
    record = await _record_of(ctx, call_id, form, "recording")
    if record is None:
        return Response(status_code=204)
    duration = ascii_int(text(form, "RecordingDuration", 20))
    channels = ascii_int(text(form, "RecordingChannels", 4))
    made = Recording(recording_sid, ctx.twilio.recording_url(recording_sid),
                     None if duration is None else float(duration), channels if channels in (1, 2) else 2)  # fmt: skip
    if record.recording == made:
        return Response(status_code=204)  # a replay
    try:
        await ctx.store.update_call(record.call_id, ctx.clock(), recording=made)
    except CallNotFound:
        return Response(status_code=204)
    log.info("call %s (%s): recording %s, %s s", record.call_id, record.call_sid, recording_sid, made.duration_s)
    return Response(status_code=204)
