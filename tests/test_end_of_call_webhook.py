"""The end-of-call webhook through the store outbox (the all-in-one server's path): queued when both sides of the
end have reported, whichever comes last, signed, retried on a test clock, delivered once, visible in the record.

The control API over ASGI (its /status and /recording webhooks), the media side's one call
(`EndOfCall.media_done`, as the media node makes it), the `OutboxWorker` one batch at a time, and a loopback
receiver that checks every signature. The main path runs on SQLite, moto and DynamoDB Local (the outbox is the
store on each); a real process restart is in test_webhook_restart.py, the SQS path in test_webhook_consumer.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from call_state.call_end import EndOfCall
from call_state.outbound import OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import WebhookSigner
from call_state.store import CallStore
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_jobs import GIVE_UP_AFTER_S, MEDIA_GRACE_S, event_id_for
from call_state.webhook_worker import OutboxWorker
from tests.control_helpers import ACCOUNT_SID, AUTH, Clock, advance, app_of, control_api, make_call, signed
from tests.standins.receiver import Receiver
from tests.standins.twilio_rest import TwilioRestStandIn

SECRET = "test-webhook-secret-not-real-0123"
STREAM = "MZ" + "7" * 32


@dataclass
class World:
    api: httpx.AsyncClient
    store: CallStore
    receiver: Receiver
    worker: OutboxWorker
    end_of_call: EndOfCall

    async def call(self, **fields: Any) -> tuple[str, str]:
        body = {"destination_number": "+15551230000", "webhook_url": self.receiver.url("/events"), **fields}
        r = await make_call(self.api, body)
        assert r.status_code == 201, r.text
        return r.json()["call_id"], r.json()["call_sid"]

    async def streamed_call(self) -> tuple[str, str]:
        """A call the media node bridges: its stream is claimed."""
        call_id, call_sid = await self.call()
        self.store.claim_stream(call_id, STREAM, "node-a", self.now())
        return call_id, call_sid

    async def twilio_says(self, call_id: str, call_sid: str, status: str, **extra: str) -> None:
        path = f"/status/{call_id}"
        form = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": status, **extra}
        assert (await self.api.post(path, **signed(path, form))).status_code == 204

    async def webhook_state(self, call_id: str) -> dict[str, Any]:
        state: dict[str, Any] = (await self.api.get(f"/calls/{call_id}", headers=AUTH)).json()["webhook"]
        return state

    def now(self) -> float:
        return float(self.api.clock.now)  # type: ignore[attr-defined]


@asynccontextmanager
async def world(twilio: TwilioRestStandIn, store: CallStore) -> AsyncIterator[World]:
    clock = Clock()
    with Receiver(SECRET.encode()) as receiver:
        async with control_api(twilio, store, clock=clock, webhook_secret=SECRET,
                               webhook_allowed_hosts=frozenset({"127.0.0.1"})) as api:  # fmt: skip
            ctx = app_of(api).state.ctx
            worker = OutboxWorker(ctx.store, WebhookDelivery(ctx.store, ctx.outbound, clock), clock)
            yield World(api, store, receiver, worker, ctx.end_of_call)


async def test_media_side_last_then_one_signed_delivery(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    async with world(twilio, any_store) as w:
        call_id, call_sid = await w.streamed_call()
        await w.twilio_says(call_id, call_sid, "in-progress")
        await w.twilio_says(call_id, call_sid, "completed", CallDuration="61")
        assert await w.worker.run_once() == 0 and w.receiver.deliveries() == 0  # the media side is not done
        assert await w.end_of_call.media_done(call_id, w.now()) is True  # its last turns are written
        assert await w.worker.run_once() == 1
        (sent,) = w.receiver.received
        assert sent.signature_ok and sent.headers["content-type"] == "application/json"
        assert sent.json["event"] == "call.ended" and sent.json["event_id"] == event_id_for(call_id)
        shown = (await w.api.get(f"/calls/{call_id}", headers=AUTH)).json()
        assert {k: v for k, v in sent.json["call"].items() if k != "webhook"} == {
            k: v for k, v in shown.items() if k != "webhook"}  # fmt: skip
        assert sent.json["call"]["status"] == "completed" and shown["stream_sid"] == STREAM
        state = shown["webhook"]
        assert state["state"] == "delivered" and state["attempts"] == 1 and state["last_status"] == 200
        assert state["event_id"] == event_id_for(call_id)
        await w.twilio_says(call_id, call_sid, "completed", CallDuration="61")  # a replay
        assert await w.end_of_call.media_done(call_id, w.now()) is False  # a repeat
        advance(w.api, MEDIA_GRACE_S + 1)  # the safety-net job comes due: someone delivered, so it sends nothing
        assert await w.worker.run_once() == 1 and await w.worker.run_once() == 0
        assert w.receiver.deliveries() == 1


async def test_status_last_and_calls_that_never_had_a_stream(
    twilio: TwilioRestStandIn, sqlite_store: CallStore
) -> None:
    async with world(twilio, sqlite_store) as w:
        streamed, sid1 = await w.streamed_call()
        assert await w.end_of_call.media_done(streamed, w.now()) is False  # Twilio has not said it is over
        await w.twilio_says(streamed, sid1, "completed")  # completes the pair
        busy, sid2 = await w.call()
        await w.twilio_says(busy, sid2, "busy")  # no stream: the status alone ends it
        assert await w.worker.run_once() == 2
        by_call = {r.json["call"]["call_id"]: r.json["call"]["status"] for r in w.receiver.received}
        assert by_call == {streamed: "completed", busy: "busy"}
        assert all(r.signature_ok for r in w.receiver.received)


async def test_a_refused_dial_sends_failed(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    twilio.error = (400, {"code": 21215, "message": "Geo permission not enabled", "status": 400})
    async with world(twilio, sqlite_store) as w:
        r = await make_call(w.api, {"destination_number": "+15551230000", "webhook_url": w.receiver.url("/events")})
        assert r.status_code == 502
        assert await w.worker.run_once() == 1
        (sent,) = w.receiver.received
        assert sent.json["call"]["status"] == "failed" and "21215" in sent.json["call"]["error"]


async def test_retried_after_a_500_then_delivered_once(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    async with world(twilio, sqlite_store) as w:
        w.receiver.reply("/events", status=500)
        call_id, call_sid = await w.call()
        await w.twilio_says(call_id, call_sid, "no-answer")
        assert await w.worker.run_once() == 1
        state = await w.webhook_state(call_id)
        assert state["state"] == "retrying" and state["last_error"] == "HTTP 500" and state["attempts"] == 1
        assert state["next_attempt_at"] - w.now() <= 60  # the first retry within a minute
        assert await w.worker.run_once() == 0  # not due yet
        w.receiver.reply("/events", status=204, body=b"")
        advance(w.api, state["next_attempt_at"] - w.now())
        assert await w.worker.run_once() == 1
        state = await w.webhook_state(call_id)
        assert state["state"] == "delivered" and state["attempts"] == 2 and state["last_status"] == 204
        for _ in range(3):  # nothing more, ever
            advance(w.api, 3600)
            await w.worker.run_once()
        attempts = w.receiver.received
        assert len(attempts) == 2 and {a.json["event_id"] for a in attempts} == {event_id_for(call_id)}
        assert all(a.signature_ok for a in attempts) and attempts[0].headers["x-voice-agent-signature"] != (
            attempts[1].headers["x-voice-agent-signature"])  # fmt: skip  # each attempt is signed afresh


async def test_a_media_node_that_never_reports_still_gets_the_webhook_out(
    twilio: TwilioRestStandIn, sqlite_store: CallStore
) -> None:
    async with world(twilio, sqlite_store) as w:
        call_id, call_sid = await w.streamed_call()
        await w.twilio_says(call_id, call_sid, "completed")
        advance(w.api, MEDIA_GRACE_S - 1)
        assert await w.worker.run_once() == 0  # still within the grace the media side has
        advance(w.api, 2)  # the node died mid-call: the deadline job sends what the record has
        assert await w.worker.run_once() == 1 and w.receiver.deliveries() == 1
        assert await w.end_of_call.media_done(call_id, w.now()) is True  # a late media side completes the pair
        assert await w.worker.run_once() == 1  # ... and its job finds the webhook delivered
        assert w.receiver.deliveries() == 1


async def test_the_safety_net_retries_its_own_failed_attempt(
    twilio: TwilioRestStandIn, sqlite_store: CallStore
) -> None:
    async with world(twilio, sqlite_store) as w:
        w.receiver.reply("/events", status=503)
        call_id, call_sid = await w.streamed_call()
        await w.twilio_says(call_id, call_sid, "completed")
        advance(w.api, MEDIA_GRACE_S + 1)  # the node died mid-call: only the deadline job exists
        assert await w.worker.run_once() == 1
        state = await w.webhook_state(call_id)
        assert state["state"] == "retrying" and state["job"] == "deadline"
        w.receiver.reply("/events", status=204, body=b"")
        advance(w.api, state["next_attempt_at"] - w.now())
        assert await w.worker.run_once() == 1  # it does not drop itself as if a deliver job had the webhook
        assert (await w.webhook_state(call_id))["state"] == "delivered" and w.receiver.deliveries() == 2


async def test_given_up_after_a_day(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    async with world(twilio, sqlite_store) as w:
        w.receiver.reply("/events", status=503)
        call_id, call_sid = await w.call()
        ended = w.now()
        await w.twilio_says(call_id, call_sid, "failed")
        while (await w.webhook_state(call_id)).get("state") != "failed":
            assert await w.worker.run_once() >= 1
            state = await w.webhook_state(call_id)
            if state["state"] == "retrying":
                advance(w.api, state["next_attempt_at"] - w.now())
        assert w.now() - ended >= GIVE_UP_AFTER_S
        assert (await w.webhook_state(call_id))["attempts"] == w.receiver.deliveries() < 30
        advance(w.api, 7 * 86400)
        assert await w.worker.run_once() == 0  # the job is gone (the deadline job dropped itself long ago)


async def test_a_recorded_call_waits_for_its_recording(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    async with world(twilio, sqlite_store) as w:
        call_id, call_sid = await w.call(record=True)
        await w.twilio_says(call_id, call_sid, "completed")
        assert await w.worker.run_once() == 1 and w.receiver.deliveries() == 0  # waits for Twilio's recording
        advance(w.api, 2)
        path, sid = f"/recording/{call_id}", "RE" + "3" * 32
        form = {"CallSid": call_sid, "RecordingSid": sid, "RecordingStatus": "completed", "RecordingDuration": "60"}
        assert (await w.api.post(path, **signed(path, form))).status_code == 204
        assert await w.worker.run_once() == 1
        (sent,) = w.receiver.received
        assert sent.json["call"]["recording"]["sid"] == sid


async def test_calls_without_a_webhook_queue_nothing(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    async with world(twilio, sqlite_store) as w:
        r = await make_call(w.api, {"destination_number": "+15551230000"})
        call_id, call_sid = r.json()["call_id"], r.json()["call_sid"]
        await w.twilio_says(call_id, call_sid, "busy")
        advance(w.api, MEDIA_GRACE_S + 1)
        assert await w.worker.run_once() == 0 and w.receiver.deliveries() == 0
        assert await w.webhook_state(call_id) == {}


@pytest.mark.parametrize("secret", ["", "test-another-secret-not-real-0123"])
async def test_without_the_right_secret_nothing_is_accepted(
    twilio: TwilioRestStandIn, sqlite_store: CallStore, secret: str
) -> None:
    async with world(twilio, sqlite_store) as w:
        call_id, call_sid = await w.call()
        ctx = app_of(w.api).state.ctx
        client = None
        if secret:
            client = OutboundClient(WebhookSigner(secret.encode()), OutboundPolicy(frozenset({"127.0.0.1"})))
        worker = OutboxWorker(ctx.store, WebhookDelivery(ctx.store, client, ctx.clock), ctx.clock)
        await w.twilio_says(call_id, call_sid, "busy")
        assert await worker.run_once() == 1
        state = await w.webhook_state(call_id)
        assert state["state"] == "retrying"
        assert state["last_error"] == ("HTTP 401" if secret else "WEBHOOK_SECRET is not set")
        assert w.receiver.deliveries() == (1 if secret else 0)
