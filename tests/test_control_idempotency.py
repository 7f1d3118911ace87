"""Idempotency that holds: at most one dial per key, a lost answer is read back, a crashed claim recovers.

Every case on SQLite, moto and DynamoDB Local; store failures come from `FlakyStore` (a real store whose chosen
methods raise), Twilio is the loopback REST stand-in, the clock is manual so leases can run out.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import httpx
import pytest

from call_state.store import CallStore, IdemState
from call_state.twilio_rest import TwilioRestClient
from lambda_api.idempotency import LEASE_S, IdempotencyKeys
from lambda_api.make_call import parse_body
from lambda_api.schemas import MakeCallRequest
from tests.control_helpers import (
    ACCOUNT_SID,
    API_KEY,
    AUTH,
    AUTH_TOKEN,
    FlakyStore,
    advance,
    app_of,
    control_api,
    make_call,
    signed,
)
from tests.standins.twilio_rest import TwilioRestStandIn

KEY = {"Idempotency-Key": "order-4711"}


@pytest.fixture
async def flaky(any_store: CallStore) -> FlakyStore:
    return FlakyStore(any_store)


@pytest.fixture
async def api(twilio: TwilioRestStandIn, flaky: FlakyStore) -> AsyncIterator[httpx.AsyncClient]:
    async with control_api(twilio, flaky) as client:
        ctx = app_of(client).state.ctx
        ctx.keys = IdempotencyKeys(ctx.store, ctx.clock, wait_s=0.3)  # retries give up fast in tests
        yield client


def stored_key(header: str = KEY["Idempotency-Key"]) -> str:
    return hashlib.sha256(f"{API_KEY}\x00{header}".encode()).hexdigest()


def body_hash(body: dict[str, str] | None = None) -> str:
    raw = parse_body(
        httpx.Request("POST", "/", json=body or {"destination_number": "+15551230000"}).content, MakeCallRequest
    )
    return hashlib.sha256(raw.canonical().encode()).hexdigest()


async def test_lost_answer_write_is_read_back_from_the_record(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, flaky: FlakyStore
) -> None:
    flaky.fail["complete_idempotency_key"] = -1  # the store refuses the answer, every retry of it too
    first = await make_call(api, **KEY)
    assert first.status_code == 201  # the call is placed: never an error that invites a second dial
    assert flaky.failed["complete_idempotency_key"] == 4  # written with retries
    advance(api)
    again = await make_call(api, **KEY)
    assert again.status_code == 201 and again.json()["call_id"] == first.json()["call_id"]
    assert again.json()["call_sid"] == first.json()["call_sid"]
    assert twilio.dials == 1


async def test_transient_store_errors_after_the_dial_lose_nothing(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, flaky: FlakyStore
) -> None:
    flaky.fail.update(update_call=2, apply_status=1, complete_idempotency_key=2)
    first = await make_call(api, **KEY)
    assert first.status_code == 201
    record = (await api.get(f"/calls/{first.json()['call_id']}", headers=AUTH)).json()
    assert record["call_sid"] == first.json()["call_sid"] and record["status"] == "queued"
    again = await make_call(api, **KEY)
    assert again.json() == first.json() and twilio.dials == 1


async def test_store_down_after_the_dial_then_a_retry(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, flaky: FlakyStore
) -> None:
    for name in ("update_call", "apply_status", "complete_idempotency_key"):
        flaky.fail[name] = -1
    first = await make_call(api, **KEY)
    assert first.status_code == 201
    call_id, call_sid = first.json()["call_id"], first.json()["call_sid"]
    flaky.fail.clear()  # the store is back; the answer and the SID were lost
    early = await make_call(api, **KEY)
    assert early.status_code == 409 and early.json()["error"]["code"] == "in_progress"  # within the lease
    assert int(early.headers["Retry-After"]) >= 1
    path = f"/status/{call_id}"  # Twilio's first callback carries the SID
    form = {"CallSid": call_sid, "CallStatus": "ringing", "SequenceNumber": "1"}
    assert (await api.post(path, **signed(path, form))).status_code == 204
    again = await make_call(api, **KEY)
    assert again.status_code == 201 and again.json() == {"call_id": call_id, "call_sid": call_sid,
                                                         "status": "ringing"}  # fmt: skip
    assert twilio.dials == 1


async def test_a_claim_left_by_a_crash_before_dialling_recovers(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, any_store: CallStore
) -> None:
    now = app_of(api).state.ctx.clock()
    any_store.claim_idempotency_key(stored_key(), body_hash(), "c_" + "d" * 24, "crashed", now, 86400, LEASE_S)
    held = await make_call(api, **KEY)
    assert held.status_code == 409 and held.json()["error"]["code"] == "in_progress"
    advance(api, LEASE_S + 1)  # the crashed request's lease runs out: nothing was dialled, so a retry dials
    recovered = await make_call(api, **KEY)
    assert recovered.status_code == 201 and recovered.json()["call_id"] == "c_" + "d" * 24
    assert (await make_call(api, **KEY)).json() == recovered.json()
    assert twilio.dials == 1


async def test_a_crash_mid_dial_never_dials_again(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, any_store: CallStore
) -> None:
    """The first request recorded the call, marked the key dialling, asked Twilio and died: maybe it dialled."""
    ctx = app_of(api).state.ctx
    now = ctx.clock()
    from lambda_api.dialer import outbound_record

    call_id = "c_" + "e" * 24
    body = parse_body(b'{"destination_number": "+15551230000"}', MakeCallRequest)
    any_store.create_call(outbound_record(ctx, call_id, body, body.actions(), now))
    any_store.claim_idempotency_key(stored_key(), body_hash(), call_id, "died", now, 86400, LEASE_S)
    assert any_store.mark_idempotency_dialling(stored_key(), "died", now)
    assert (await make_call(api, **KEY)).status_code == 409
    advance(api, LEASE_S + 1)
    late = await make_call(api, **KEY)
    assert late.status_code == 201 and late.json() == {"call_id": call_id, "call_sid": "", "status": "created"}
    assert twilio.dials == 0  # the outcome was unknown: the record answers, Twilio is not asked twice
    claim = any_store.claim_idempotency_key(stored_key(), body_hash(), "x", "probe", ctx.clock(), 86400, 30)
    assert claim.state is IdemState.DIALLING


async def test_twilio_timeout_is_an_unknown_outcome_not_a_refusal(
    twilio: TwilioRestStandIn, any_store: CallStore
) -> None:
    twilio.delay_s = 0.6  # Twilio takes the dial, but answers after our timeout
    slow = TwilioRestClient(ACCOUNT_SID, AUTH_TOKEN, twilio.base_url, timeout=0.2)
    async with control_api(twilio, any_store, twilio_client=slow) as api:
        r = await make_call(api, **KEY)
        assert r.status_code == 504 and r.json()["error"]["code"] == "twilio_timeout"
        call_id = r.json()["error"]["call_id"]
        record = (await api.get(f"/calls/{call_id}", headers=AUTH)).json()
        assert "dial outcome unknown" in record["error"] and record["status"] == "created"
        twilio.delay_s = 0.0
        advance(api, LEASE_S + 1)
        retry = await make_call(api, **KEY)
        assert retry.status_code == 201 and retry.json()["call_id"] == call_id
    assert twilio.dials == 1  # the stand-in placed the first one; nobody dialled again


async def test_a_store_error_before_the_dial_releases_the_key(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, flaky: FlakyStore
) -> None:
    flaky.fail["create_call"] = 1
    failed = await make_call(api, **KEY)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal"
    assert twilio.dials == 0
    assert (await make_call(api, **KEY)).status_code == 201  # released: the retry dials at once
    assert twilio.dials == 1


async def test_malformed_keys_are_400(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    for bad in ("a" * 201, "has space", "tab\there", "ünï".encode()):
        r = await make_call(api, **{"Idempotency-Key": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_idempotency_key", bad
    assert twilio.dials == 0
