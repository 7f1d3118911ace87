"""Twilio's webhooks under replay and hostile input: idempotent, urlencoded only, malformed numbers ignored.

Every case on SQLite, moto and DynamoDB Local where the store is involved; all requests carry valid signatures
(the attacks here are what a replay, or a buggy proxy, can do with a signed request).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from call_state.store import CallStore
from call_state.tokens import StreamTokens
from lambda_api.webhooks import inbound_call_id
from tests.control_helpers import (
    AUTH,
    SECRET,
    Clock,
    advance,
    beat,
    control_api,
    make_call,
    signed,
)
from tests.standins.twilio_rest import TwilioRestStandIn

CALL_SID = "CA" + "6" * 32
INBOUND = {"CallSid": CALL_SID, "From": "+15557654321", "To": "+15550001111", "CallStatus": "ringing"}


@pytest.fixture
async def api(twilio: TwilioRestStandIn, any_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    async with control_api(twilio, any_store) as client:
        yield client


def token_of(xml: str) -> str:
    return xml.split('name="token" value="')[1].split('"')[0]


async def test_incoming_replays_return_the_same_record_and_twiml(api: httpx.AsyncClient, any_store: CallStore) -> None:
    first = await api.post("/incoming", **signed("/incoming", INBOUND))
    replay = await api.post("/incoming", **signed("/incoming", INBOUND))
    assert first.status_code == replay.status_code == 200
    call_id = inbound_call_id(CALL_SID)
    assert f'name="call_id" value="{call_id}"' in first.text and first.text == replay.text  # same second: same token
    calls = (await api.get("/calls", headers=AUTH)).json()["calls"]
    assert [c["call_id"] for c in calls] == [call_id]  # one record, however often it is replayed
    any_store.claim_stream(call_id, "MZ" + "1" * 32, "node-a", api.clock.now)  # type: ignore[attr-defined]
    advance(api)
    late = await api.post("/incoming", **signed("/incoming", INBOUND))
    assert late.status_code == 200 and "<Hangup" in late.text and "token" not in late.text


async def test_incoming_without_a_call_sid_stores_nothing(api: httpx.AsyncClient) -> None:
    for sid in ("", "CA123", "CA" + "g" * 32, "CA" + "1" * 32 + "\n"):
        form = {**INBOUND, "CallSid": sid}
        r = await api.post("/incoming", **signed("/incoming", form))
        assert r.status_code == 200 and "<Hangup" in r.text
    assert (await api.get("/calls", headers=AUTH)).json()["calls"] == []


async def test_incoming_gets_busy_when_the_media_plane_cannot_take_it(
    twilio: TwilioRestStandIn, any_store: CallStore
) -> None:
    clock = Clock()
    beat(any_store, clock, draining=True)
    async with control_api(twilio, any_store, clock=clock, node=False) as api:
        r = await api.post("/incoming", **signed("/incoming", INBOUND))
        assert r.status_code == 200 and '<Reject reason="busy"' in r.text
        assert (await api.get("/calls", headers=AUTH)).json()["calls"] == []


async def test_twiml_mints_until_the_stream_is_claimed_then_hangs_up(
    api: httpx.AsyncClient, any_store: CallStore
) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/twiml/{call_id}"
    tokens = StreamTokens(SECRET.encode())
    form = {"CallSid": "CA" + "2" * 32, "CallStatus": "in-progress"}
    first = await api.post(path, **signed(path, form))
    advance(api, 1)
    replay = await api.post(path, **signed(path, form))  # before the stream: may mint again (both die at claim)
    tokens.verify(token_of(first.text), call_id, api.clock.now)  # type: ignore[attr-defined]
    tokens.verify(token_of(replay.text), call_id, api.clock.now)  # type: ignore[attr-defined]
    any_store.claim_stream(call_id, "MZ" + "3" * 32, "node-a", api.clock.now)  # type: ignore[attr-defined]
    after = await api.post(path, **signed(path, form))
    assert after.status_code == 200 and "<Hangup" in after.text and "token" not in after.text


async def test_callbacks_for_unknown_calls_store_nothing(api: httpx.AsyncClient, any_store: CallStore) -> None:
    for path, form in [
        ("/stream-status/c_ghost", {"StreamEvent": "stream-started", "StreamSid": "MZ" + "5" * 32}),
        ("/status/c_ghost", {"CallSid": "CA" + "5" * 32, "CallStatus": "completed"}),
        ("/twiml/c_ghost", {"CallSid": "CA" + "5" * 32}),
    ]:
        r = await api.post(path, **signed(path, form))
        assert r.status_code in (200, 204), path
    assert any_store.get_call("c_ghost", api.clock.now) is None  # type: ignore[attr-defined]
    assert (await api.get("/calls", headers=AUTH)).json()["calls"] == []


@pytest.mark.parametrize("bad", ["²", "٣", "-1", "1e3", "9" * 40, " 7"])
async def test_malformed_numbers_are_ignored_and_the_rest_applies(api: httpx.AsyncClient, bad: str) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/status/{call_id}"
    form = {"CallSid": "CA" + "4" * 32, "CallStatus": "ringing", "SequenceNumber": bad, "SipResponseCode": bad,
            "CallDuration": bad}  # fmt: skip
    assert (await api.post(path, **signed(path, form))).status_code == 204
    record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
    ringing = record["status_history"][-1]
    assert record["status"] == "ringing" and ringing["sequence"] is None and bad not in ringing["detail"]


async def test_stream_status_values_are_checked_before_they_are_stored(api: httpx.AsyncClient) -> None:
    call_id = (await make_call(api)).json()["call_id"]
    path = f"/stream-status/{call_id}"
    form = {"StreamEvent": "stream-started\nFAKE LOG LINE", "StreamSid": "MZ\n" + "5" * 30, "StreamError": ""}
    assert (await api.post(path, **signed(path, form))).status_code == 204
    event = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()["stream_events"][0]
    assert (event["event"], event["stream_sid"]) == ("unknown", "")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="CallSid"\r\n\r\nCA1\r\n--x--',
        ),
        ("application/json", b'{"CallSid": "CA1"}'),
        ("text/plain", b"CallSid=CA1"),
        ("", b"CallSid=CA1"),
    ],
)
async def test_webhooks_accept_only_urlencoded(api: httpx.AsyncClient, content_type: str, body: bytes) -> None:
    headers = {"X-Twilio-Signature": "anything", **({"Content-Type": content_type} if content_type else {})}
    r = await api.post("/incoming", content=body, headers=headers)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


async def test_forms_with_too_many_fields_are_400(api: httpx.AsyncClient) -> None:
    body = "&".join(f"f{i}=x" for i in range(500))
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
    r = await api.post("/status/c_x", content=body, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_form"
