"""The Twilio REST client against an in-process transport (httpx.MockTransport), and against the loopback HTTP
stand-in of Twilio's API (transfer, recordings, the fields of a create)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import parse_qsl

import httpx
import pytest

from call_state.twilio_rest import TwilioError, TwilioRestClient
from tests.standins.twilio_rest import TwilioRestStandIn

SID = "AC" + "a" * 32
CALL_SID = "CA" + "b" * 32


@pytest.fixture
def twilio_standin() -> Iterator[TwilioRestStandIn]:
    with TwilioRestStandIn(STANDIN_SID, TOKEN) as standin:
        yield standin


def client_with(handler: httpx.MockTransport) -> TwilioRestClient:
    return TwilioRestClient(SID, "test-auth-token-not-real", "http://127.0.0.1:9", transport=handler)


async def test_create_call_posts_form_with_repeated_events() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"sid": CALL_SID, "status": "queued"})

    client = client_with(httpx.MockTransport(answer))
    result = await client.create_call(
        {"To": "+15551230000", "From": "+15559870000", "StatusCallbackEvent": ["initiated", "ringing"]}
    )
    await client.aclose()
    assert result == {"sid": CALL_SID, "status": "queued"}
    request = seen[0]
    assert request.url.path == f"/2010-04-01/Accounts/{SID}/Calls.json"
    assert request.headers["authorization"].startswith("Basic ")
    form = parse_qsl(request.content.decode())
    assert ("StatusCallbackEvent", "initiated") in form and ("StatusCallbackEvent", "ringing") in form


async def test_errors_keep_twilio_code_and_message() -> None:
    body = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
    client = client_with(httpx.MockTransport(lambda r: httpx.Response(400, json=body)))
    with pytest.raises(TwilioError) as info:
        await client.create_call({"To": "+1"})
    assert (info.value.status, info.value.code, info.value.message) == (400, 21211, "Invalid 'To' Phone Number")


async def test_unreachable_twilio_is_a_twilio_error() -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(TwilioError, match="unreachable"):
        await client_with(httpx.MockTransport(fail)).create_call({"To": "+1"})


async def test_hangup_treats_already_ended_as_false() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"sid": CALL_SID, "status": "completed"}),
            httpx.Response(404, content=json.dumps({"code": 20404, "message": "not found"})),
            httpx.Response(500, json={"code": 20500, "message": "boom"}),
        ]
    )
    client = client_with(httpx.MockTransport(lambda r: next(answers)))
    assert await client.hangup(CALL_SID) is True
    assert await client.hangup(CALL_SID) is False
    with pytest.raises(TwilioError):
        await client.hangup(CALL_SID)
    with pytest.raises(TwilioError, match="not a Twilio call SID"):
        await client.hangup("../../Accounts")


# --- against the real HTTP stand-in (tests/standins/twilio_rest.py) ---------------------------------------------

STANDIN_SID = "AC" + "9" * 32
TOKEN = "test-auth-token-not-real"
RECORDING = "RE" + "c" * 32


async def test_transfer_updates_the_live_call_with_a_dial(twilio_standin: TwilioRestStandIn) -> None:
    client = TwilioRestClient(STANDIN_SID, TOKEN, twilio_standin.base_url)
    await client.transfer(CALL_SID, "+15557654321", caller_id="+15550001111")
    ((sid, form),) = twilio_standin.updates
    assert sid == CALL_SID and list(form) == ["Twiml"]
    assert form["Twiml"] == ['<Response><Dial callerId="+15550001111">+15557654321</Dial></Response>']
    twilio_standin.update_error = (400, {"code": 21220, "message": "Call is not in-progress", "status": 400})
    with pytest.raises(TwilioError) as refused:  # the media node tells the agent (a tool error), the call goes on
        await client.transfer(CALL_SID, "+15557654321", caller_id="+15550001111")
    assert (refused.value.status, refused.value.code) == (400, 21220)
    for bad in ("5557654321", "+1555<Play>", "+15557654321\n"):
        with pytest.raises(TwilioError, match=r"E\.164"):
            await client.transfer(CALL_SID, bad, caller_id="+15550001111")
    assert len(twilio_standin.updates) == 2  # nothing malformed was sent
    await client.aclose()


async def test_recording_audio_is_fetched_with_our_credentials(twilio_standin: TwilioRestStandIn) -> None:
    twilio_standin.recordings[RECORDING] = b"RIFF" + bytes(range(256)) * 40
    client = TwilioRestClient(STANDIN_SID, TOKEN, twilio_standin.base_url)
    response = await client.open_recording(RECORDING, "mp3")
    audio = await response.aread()
    await response.aclose()
    assert audio == twilio_standin.recordings[RECORDING] and response.headers["content-type"] == "audio/mpeg"
    path, auth = twilio_standin.media_requests[-1]
    assert path == f"/2010-04-01/Accounts/{STANDIN_SID}/Recordings/{RECORDING}.mp3" and auth.startswith("Basic ")
    with pytest.raises(TwilioError) as missing:
        await client.open_recording("RE" + "d" * 32, "wav")
    assert (missing.value.status, missing.value.code) == (404, 20404)
    for sid, fmt in (("RE123", "wav"), (RECORDING, "ogg"), ("../Calls", "wav")):
        with pytest.raises(TwilioError, match="not a recording"):
            await client.open_recording(sid, fmt)
    wrong = TwilioRestClient(STANDIN_SID, "test-wrong-token-not-real", twilio_standin.base_url)
    with pytest.raises(TwilioError) as refused:
        await wrong.open_recording(RECORDING, "wav")
    assert refused.value.status == 401
    await client.aclose()
    await wrong.aclose()


async def test_a_create_carries_the_amd_and_recording_fields(twilio_standin: TwilioRestStandIn) -> None:
    client = TwilioRestClient(STANDIN_SID, TOKEN, twilio_standin.base_url)
    await client.create_call({"To": "+15551230000", "MachineDetection": "DetectMessageEnd", "AsyncAmd": "true",
                              "Record": "true", "RecordingStatusCallbackEvent": "completed"})  # fmt: skip
    await client.aclose()
    (form,) = twilio_standin.created
    assert form["MachineDetection"] == ["DetectMessageEnd"] and form["Record"] == ["true"]
