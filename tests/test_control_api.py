"""The control API through ASGI, with a real loopback Twilio REST stand-in and every store backend."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx
import pytest

from call_state.record import CallStatus, Direction
from call_state.store import CallStore
from call_state.tokens import StreamTokens
from lambda_api.app import create_app
from lambda_api.limits import MAKE_CALL_MAX_BYTES
from tests.control_helpers import (
    API_KEY,
    AUTH,
    PUBLIC,
    SECRET,
    Clock,
    advance,
    beat,
    control_api,
    make_call,
    settings_for,
    signed,
)
from tests.standins.twilio_rest import TwilioRestStandIn


@pytest.fixture
async def api(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    async with control_api(twilio, sqlite_store) as client:
        yield client


async def test_make_call_dials_with_the_right_form(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    r = await make_call(api, {"destination_number": "+584121234567", "greeting": "Hola Ana", "metadata": {"crm": 7}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "queued" and body["call_sid"].startswith("CA") and body["call_id"].startswith("c_")
    form = twilio.created[0]
    call_id = body["call_id"]
    assert form["To"] == ["+584121234567"] and form["From"] == ["+15550001111"]
    assert form["Url"] == [f"{PUBLIC}/twiml/{call_id}"]
    assert form["StatusCallback"] == [f"{PUBLIC}/status/{call_id}"]
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert form["TimeLimit"] == ["1800"] and form["Timeout"] == ["30"]
    record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert record["agent"]["greeting"] == "Hola Ana" and record["agent"]["voice"] == "Puck"  # default voice
    assert record["metadata"] == {"crm": 7} and record["call_sid"] == body["call_sid"]
    assert [e["status"] for e in record["status_history"]] == ["created", "queued"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthorized"), ({"Authorization": "Bearer wrong-key-0123456789"}, 401, "unauthorized"),
     ({"Authorization": f"Basic {API_KEY}"}, 401, "unauthorized")],
)  # fmt: skip
async def test_make_call_needs_the_key(api: httpx.AsyncClient, headers: dict[str, str], status: int, code: str) -> None:
    r = await api.post("/make-call", json={"destination_number": "+15551230000"}, headers=headers)
    assert r.status_code == status and r.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("content", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"[]", 400, None),
        (json.dumps({}).encode(), 422, "destination_number"),
        (json.dumps({"destination_number": "0412 123"}).encode(), 422, "destination_number"),
        (json.dumps({"destination_number": "+15551230000", "voice": "x;rm"}).encode(), 422, "voice"),
        (json.dumps({"destination_number": "+15551230000", "oops": 1}).encode(), 422, "oops"),
        (json.dumps({"destination_number": "+15551230000", "metadata": {"a": "x" * 5000}}).encode(), 422, "metadata"),
        (
            json.dumps({"destination_number": "+15551230000", "system_prompt": "p" * 9000}).encode(),
            422,
            "system_prompt",
        ),
        (b"{" + b" " * MAKE_CALL_MAX_BYTES + b"}", 413, None),
    ],
)
async def test_bad_bodies_are_precise_and_never_dial(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, content: bytes, status: int, field: str | None
) -> None:
    r = await api.post("/make-call", content=content, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    if field:
        assert error["field"] == field and field in error["message"]
    assert twilio.dials == 0


async def test_destination_not_allowed_is_403_and_twilio_never_called(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn
) -> None:
    r = await make_call(api, {"destination_number": "+447700900123"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "destination_not_allowed"
    assert twilio.dials == 0


async def test_twilio_refusal_is_502_and_the_call_failed(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    twilio.error = (400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400})
    r = await make_call(api)
    assert r.status_code == 502
    error = r.json()["error"]
    assert (error["code"], error["twilio_code"], error["message"]) == (
        "twilio_error",
        21211,
        "Invalid 'To' Phone Number",
    )
    calls = (await api.get("/calls", headers=AUTH)).json()["calls"]
    assert calls[0]["status"] == "failed" and "21211" in calls[0]["error"]


async def test_idempotency_same_body_replays_other_body_conflicts(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn
) -> None:
    first = await make_call(api, **{"Idempotency-Key": "k-1"})
    advance(api)
    again = await make_call(api, **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = await make_call(api, {"destination_number": "+15559999999"}, **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert twilio.dials == 1


async def test_retry_after_twilio_refusal_may_dial_again(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    twilio.error = (503, {"code": 20503, "message": "Service unavailable", "status": 503})
    assert (await make_call(api, **{"Idempotency-Key": "k-2"})).status_code == 502
    twilio.error = None
    advance(api)
    assert (await make_call(api, **{"Idempotency-Key": "k-2"})).status_code == 201
    assert twilio.dials == 1


async def test_fifty_concurrent_retries_dial_once(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    twilio.delay_s = 0.2  # the first dial is still in flight while the retries arrive
    clock = Clock()
    beat(any_store, clock)
    app = create_app(settings_for(twilio), any_store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        answers = await asyncio.gather(*[make_call(api, **{"Idempotency-Key": "race"}) for _ in range(50)])
    assert twilio.dials == 1
    assert {r.status_code for r in answers} == {201}
    assert len({r.json()["call_id"] for r in answers}) == 1


async def test_not_configured_answers_503_naming_what_is_missing(
    twilio: TwilioRestStandIn, sqlite_store: CallStore
) -> None:
    async with control_api(twilio, sqlite_store, twilio_account_sid="", twilio_auth_token="") as api:
        r = await make_call(api)
        assert r.status_code == 503 and "TWILIO_ACCOUNT_SID" in r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) > 0
        health = await api.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "not_configured"
        assert "TWILIO" not in health.text and "missing" not in health.text  # public: names no credential
        assert (await api.post("/make-call", json={"destination_number": "+1555"})).status_code == 401  # key first
    async with control_api(twilio, sqlite_store, api_key="") as api:
        assert (await make_call(api)).status_code == 503  # never open without a key
    assert twilio.dials == 0


async def test_twiml_connects_the_stream_with_a_token(api: httpx.AsyncClient) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/twiml/{call_id}"
    r = await api.post(path, **signed(path, {"CallSid": "CA" + "2" * 32, "CallStatus": "in-progress"}))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/xml")
    xml = r.text
    assert '<Stream statusCallback="https://voice.example.com/stream-status/' in xml
    assert 'url="wss://media.example.com/stream"' in xml and "?" not in xml.split('url="')[1].split('"')[0]
    assert f'<Parameter name="call_id" value="{call_id}"' in xml
    token = xml.split('name="token" value="')[1].split('"')[0]
    StreamTokens(SECRET.encode()).verify(token, call_id, time.time())


@pytest.mark.parametrize("path", ["/twiml/c_x", "/status/c_x", "/stream-status/c_x", "/incoming"])
async def test_webhooks_need_a_valid_signature(api: httpx.AsyncClient, path: str) -> None:
    form = {"CallSid": "CA" + "2" * 32, "CallStatus": "ringing"}
    unsigned = await api.post(path, data=form)
    assert unsigned.status_code == 403 and unsigned.json()["error"]["code"] == "bad_signature"
    wrong = await api.post(path, **signed(path, form, token="another-token-not-real"))
    assert wrong.status_code == 403
    tampered = signed(path, form)
    tampered["content"] = urlencode({**form, "CallStatus": "completed"})
    assert (await api.post(path, **tampered)).status_code == 403


async def test_unknown_call_gets_a_hangup_not_an_error(api: httpx.AsyncClient) -> None:
    r = await api.post("/twiml/c_gone", **signed("/twiml/c_gone", {"CallSid": "CA" + "3" * 32}))
    assert r.status_code == 200 and "<Hangup" in r.text
    r = await api.post("/status/c_gone", **signed("/status/c_gone", {"CallStatus": "completed"}))
    assert r.status_code == 204


async def test_status_callbacks_out_of_order_and_duplicated(api: httpx.AsyncClient) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/status/{call_id}"
    for status, seq in [("ringing", 1), ("completed", 3), ("in-progress", 2), ("completed", 3), ("initiated", 0)]:
        form = {"CallSid": "CA" + "4" * 32, "CallStatus": status, "SequenceNumber": str(seq), "SipResponseCode": "200"}
        assert (await api.post(path, **signed(path, form))).status_code == 204
    record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert record["status"] == "completed"
    assert [e["status"] for e in record["status_history"]] == [
        "created", "queued", "initiated", "ringing", "in-progress", "completed",
    ]  # fmt: skip


async def test_stream_status_is_recorded(api: httpx.AsyncClient) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/stream-status/{call_id}"
    form = {"StreamEvent": "stream-error", "StreamSid": "MZ" + "5" * 32, "StreamError": "31920 Handshake Error"}
    assert (await api.post(path, **signed(path, form))).status_code == 204
    record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert record["stream_events"][0]["event"] == "stream-error"
    assert record["stream_events"][0]["error"] == "31920 Handshake Error"


async def test_incoming_creates_an_inbound_call(api: httpx.AsyncClient) -> None:
    form = {"CallSid": "CA" + "6" * 32, "From": "+15557654321", "To": "+15550001111", "CallStatus": "ringing"}
    r = await api.post("/incoming", **signed("/incoming", form))
    assert r.status_code == 200 and "<Connect><Stream" in r.text
    call_id = r.text.split('name="call_id" value="')[1].split('"')[0]
    record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    assert record["direction"] == Direction.INBOUND.value and record["from"] == "+15557654321"
    assert record["status"] == CallStatus.RINGING.value and record["call_sid"] == form["CallSid"]


async def test_list_paginates_newest_first(api: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(5):
        ids.append((await make_call(api)).json()["call_id"])
        advance(api)
    page = (await api.get("/calls?limit=2", headers=AUTH)).json()
    assert [c["call_id"] for c in page["calls"]] == ids[::-1][:2]
    seen = [c["call_id"] for c in page["calls"]]
    while page["next_cursor"]:
        page = (await api.get("/calls", params={"limit": 2, "cursor": page["next_cursor"]}, headers=AUTH)).json()
        seen += [c["call_id"] for c in page["calls"]]
    assert seen == ids[::-1]
    assert (await api.get("/calls?cursor=garbage", headers=AUTH)).status_code == 400
    assert (await api.get("/calls?limit=0", headers=AUTH)).status_code == 422
    assert (await api.get("/calls", headers={})).status_code == 401
    assert (await api.get("/calls/c_missing", headers=AUTH)).status_code == 404


async def test_hangup_goes_through_twilio(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    body = (await make_call(api)).json()
    r = await api.post(f"/calls/{body['call_id']}/hangup", headers=AUTH)
    assert r.status_code == 200 and r.json()["hung_up"] is True
    assert twilio.updates == [(body["call_sid"], {"Status": ["completed"]})]
    assert (await api.post("/calls/c_nope/hangup", headers=AUTH)).status_code == 404
