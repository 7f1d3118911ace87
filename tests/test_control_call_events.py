"""Twilio's AMD and recording callbacks (`/amd/{id}`, `/recording/{id}`) under replay and hostile input, and the
recording served by `GET /calls/{id}/recording` from the loopback Twilio stand-in, with our credentials.

The callbacks on SQLite, moto and DynamoDB Local; every request carries a valid signature unless the case is
about signatures (the attacks are what a replay, or a buggy proxy, can do with a signed request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from call_state.store import CallStore
from tests.control_helpers import ACCOUNT_SID, AUTH, control_api, make_call, signed
from tests.standins.twilio_rest import TwilioRestStandIn

RECORDING = "RE" + "a" * 32
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 300


@pytest.fixture
async def api(twilio: TwilioRestStandIn, any_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    async with control_api(twilio, any_store) as client:
        yield client


async def placed(api: httpx.AsyncClient, **fields: Any) -> tuple[str, str]:
    r = await make_call(api, {"destination_number": "+15551230000", **fields})
    assert r.status_code == 201, r.text
    return r.json()["call_id"], r.json()["call_sid"]


async def record_of(api: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    return body


def amd_form(call_sid: str, answered_by: str = "machine_end_beep", **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "AnsweredBy": answered_by,
            "MachineDetectionDuration": "4210", **extra}  # fmt: skip


def recording_form(call_sid: str, **extra: str) -> dict[str, str]:
    return {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "RecordingSid": RECORDING, "RecordingStatus": "completed",
            "RecordingDuration": "42", "RecordingChannels": "2", "RecordingSource": "OutboundAPI",
            "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING}",
            **extra}  # fmt: skip


async def test_amd_writes_answered_by_once(api: httpx.AsyncClient) -> None:
    call_id, call_sid = await placed(api, voicemail={"action": "hang_up"})
    path = f"/amd/{call_id}"
    r = await api.post(path, **signed(path, amd_form(call_sid)))
    assert r.status_code == 204 and (await record_of(api, call_id))["answered_by"] == "machine_end_beep"
    for replay in (amd_form(call_sid), amd_form(call_sid, "human")):  # a replay, or a different second answer
        assert (await api.post(path, **signed(path, replay))).status_code == 204
    assert (await record_of(api, call_id))["answered_by"] == "machine_end_beep"  # the first answer decided


@pytest.mark.parametrize(
    "answered_by", ["human", "unknown", "fax", "machine_start", "machine_end_silence", "machine_end_other"]
)
async def test_every_twilio_answer_is_kept(api: httpx.AsyncClient, answered_by: str) -> None:
    call_id, call_sid = await placed(api, machine_detection=True)
    path = f"/amd/{call_id}"
    assert (await api.post(path, **signed(path, amd_form(call_sid, answered_by)))).status_code == 204
    assert (await record_of(api, call_id))["answered_by"] == answered_by


@pytest.mark.parametrize(
    "form",
    [
        {"AnsweredBy": "robot"},
        {"AnsweredBy": "machine_end_beep\nINFO forged line"},
        {"AnsweredBy": "\uff48\uff55\uff4d\uff41\uff4e"},  # fullwidth letters
        {"AnsweredBy": "h" * 10_000},
        {"CallSid": "CA" + "0" * 32},  # another call's SID
        {"CallSid": "not-a-sid"},
    ],
)
async def test_amd_ignores_what_is_not_this_calls_answer(api: httpx.AsyncClient, form: dict[str, str]) -> None:
    call_id, call_sid = await placed(api, voicemail={"action": "hang_up"})
    path = f"/amd/{call_id}"
    r = await api.post(path, **signed(path, {**amd_form(call_sid), **form}))
    assert r.status_code == 204 and (await record_of(api, call_id))["answered_by"] == ""


async def test_amd_for_unknown_calls_and_unsigned_requests_store_nothing(api: httpx.AsyncClient) -> None:
    call_id, call_sid = await placed(api, voicemail={"action": "hang_up"})
    ghost = "/amd/c_" + "9" * 24
    assert (await api.post(ghost, **signed(ghost, amd_form(call_sid)))).status_code == 204
    assert (await api.get(f"/calls/c_{'9' * 24}", headers=AUTH)).status_code == 404
    path = f"/amd/{call_id}"
    forged = signed(path, amd_form(call_sid), token="test-wrong-token-not-real")
    assert (await api.post(path, **forged)).status_code == 403
    odd = signed(path, amd_form(call_sid, MachineDetectionDuration="\uff14\uff12"))  # a number that is not ASCII digits
    assert (await api.post(path, **odd)).status_code == 204
    assert (await record_of(api, call_id))["answered_by"] == "machine_end_beep"  # the rest of it applies
    multipart = {"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=x"}}
    assert (await api.post(path, **multipart)).status_code == 415


async def test_recording_is_written_and_replays_change_nothing(api: httpx.AsyncClient) -> None:
    call_id, call_sid = await placed(api, record=True)
    path = f"/recording/{call_id}"
    for _ in range(3):
        assert (await api.post(path, **signed(path, recording_form(call_sid)))).status_code == 204
    recording = (await record_of(api, call_id))["recording"]
    assert recording["sid"] == RECORDING and recording["duration_s"] == 42.0 and recording["channels"] == 2
    assert recording["url"].endswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{RECORDING}")


@pytest.mark.parametrize(
    "form",
    [
        {"RecordingStatus": "absent"},
        {"RecordingStatus": "failed"},
        {"RecordingSid": "RE123"},
        {"RecordingSid": "RE" + "a" * 32 + "/../../Calls"},
        {"CallSid": "CA" + "0" * 32},
    ],
)
async def test_recording_callbacks_that_are_not_a_completed_recording_of_this_call(
    api: httpx.AsyncClient, form: dict[str, str]
) -> None:
    call_id, call_sid = await placed(api, record=True)
    path = f"/recording/{call_id}"
    assert (await api.post(path, **signed(path, {**recording_form(call_sid), **form}))).status_code == 204
    assert (await record_of(api, call_id))["recording"] is None


async def test_recording_numbers_are_read_ascii_only(api: httpx.AsyncClient) -> None:
    call_id, call_sid = await placed(api, record=True)
    path = f"/recording/{call_id}"
    odd = recording_form(call_sid, RecordingDuration="²", RecordingChannels="7")
    assert (await api.post(path, **signed(path, odd))).status_code == 204
    recording = (await record_of(api, call_id))["recording"]
    assert recording["sid"] == RECORDING and recording["duration_s"] is None and recording["channels"] == 2


async def test_the_recording_is_served_with_our_credentials(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    twilio.recordings[RECORDING] = AUDIO
    async with control_api(twilio, sqlite_store) as api:
        call_id, call_sid = await placed(api, record=True)
        url = f"/calls/{call_id}/recording"
        none_yet = await api.get(url, headers=AUTH)
        assert none_yet.status_code == 404 and none_yet.json()["error"]["code"] == "no_recording"
        path = f"/recording/{call_id}"
        await api.post(path, **signed(path, recording_form(call_sid)))
        wav = await api.get(url, headers=AUTH)
        assert wav.status_code == 200 and wav.content == AUDIO and wav.headers["content-type"] == "audio/wav"
        assert wav.headers["content-disposition"] == f'attachment; filename="{call_id}.wav"'
        mp3 = await api.get(url, params={"format": "mp3"}, headers=AUTH)
        assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
        assert [p.rsplit(".", 1)[-1] for p, _ in twilio.media_requests] == ["wav", "mp3"]
        assert all(auth.startswith("Basic ") for _, auth in twilio.media_requests)  # ours, never the user's
        assert (await api.get(url)).status_code == 401
        assert (await api.get(url, params={"format": "ogg"}, headers=AUTH)).status_code == 422
        assert (await api.get("/calls/c_nope/recording", headers=AUTH)).status_code == 404
        del twilio.recordings[RECORDING]  # deleted at Twilio
        gone = await api.get(url, headers=AUTH)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_recording"
    assert len(twilio.media_requests) == 3  # refused requests never reached Twilio
