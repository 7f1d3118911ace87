"""The Twilio REST client against an in-process transport (httpx.MockTransport), no patching."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import httpx
import pytest

from call_state.twilio_rest import TwilioError, TwilioRestClient

SID = "AC" + "a" * 32
CALL_SID = "CA" + "b" * 32


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
