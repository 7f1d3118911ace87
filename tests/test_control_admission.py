"""/make-call never dials a call the media plane would refuse, and does not pace by default.

The media plane is read from node heartbeats in the store (as on Lambda) on every backend, and from the
in-process node in the all-in-one server; Twilio is the loopback REST stand-in that counts dials.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from call_state.nodes import PlaneState, admit
from call_state.record import CallStatus, StatusEvent
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from lambda_api.media_plane import LocalMediaPlane
from tests.control_helpers import (
    AUTH,
    Clock,
    FlakyStore,
    advance,
    beat,
    control_api,
    heartbeat,
    make_call,
)
from tests.standins.twilio_rest import TwilioRestStandIn


async def test_twenty_simultaneous_calls_all_dial(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    twilio.delay_s = 0.05  # Twilio answers while the others are in flight
    async with control_api(twilio, any_store) as api:
        plain = [make_call(api, {"destination_number": f"+1555123{i:04d}"}) for i in range(10)]
        keyed = [make_call(api, {"destination_number": f"+1555124{i:04d}"}, **{"Idempotency-Key": f"k-{i}"})
                 for i in range(10)]  # fmt: skip
        answers = await asyncio.gather(*plain, *keyed)
    assert [r.status_code for r in answers] == [201] * 20
    assert twilio.dials == 20 and len({r.json()["call_id"] for r in answers}) == 20


@pytest.mark.parametrize(
    ("fields", "code", "plane"),
    [
        ({"draining": True}, "draining", "draining"),
        ({"configured": False}, "not_configured", "not_configured"),
        ({"capacity": 0}, "at_capacity", "full"),
    ],
)
async def test_media_plane_refusals_are_503_and_never_dial(
    twilio: TwilioRestStandIn, any_store: CallStore, fields: dict[str, object], code: str, plane: str
) -> None:
    clock = Clock()
    beat(any_store, clock, **fields)
    async with control_api(twilio, any_store, clock=clock, node=False) as api:
        r = await make_call(api, **{"Idempotency-Key": "k-refused"})
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert (error["code"], error["media_plane"]) == (code, plane) and int(r.headers["Retry-After"]) >= 10
        assert (await api.get("/calls", headers=AUTH)).json()["calls"] == []  # nothing stored either
        beat(any_store, clock)  # the node is back: the same key may dial now (it was released)
        assert (await make_call(api, **{"Idempotency-Key": "k-refused"})).status_code == 201
    assert twilio.dials == 1


async def test_no_heartbeat_means_no_media_plane(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    clock = Clock()
    async with control_api(twilio, any_store, clock=clock, node=False) as api:
        r = await make_call(api)
        assert r.status_code == 503 and r.json()["error"]["code"] == "media_plane_unavailable"
        health = await api.get("/healthz")
        assert health.status_code == 200 and health.json()["media_plane"] == "unavailable"
        beat(any_store, clock, ttl=30)
        assert (await make_call(api)).status_code == 201
        advance(api, 31)  # the node stopped reporting (it died without draining)
        assert (await make_call(api)).status_code == 503
    assert twilio.dials == 1


async def test_at_capacity_counts_live_calls_in_the_store(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    clock = Clock()
    beat(any_store, clock, capacity=2)
    async with control_api(twilio, any_store, clock=clock, node=False) as api:
        first = (await make_call(api)).json()["call_id"]
        assert (await make_call(api)).status_code == 201
        full = await make_call(api)
        assert full.status_code == 503 and full.json()["error"]["code"] == "at_capacity"
        health = (await api.get("/healthz")).json()
        assert (health["active_calls"], health["capacity"]) == (2, 2)
        any_store.apply_status(first, StatusEvent(CallStatus.COMPLETED, clock.now, 9), clock.now)
        assert (await make_call(api)).status_code == 201  # a call ended: its slot is free again
        assert (await make_call(api)).status_code == 503
    assert twilio.dials == 3


async def test_capacity_is_the_sum_of_usable_nodes(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    clock = Clock()
    beat(any_store, clock, node_id="node-a", capacity=1)
    beat(any_store, clock, node_id="node-b", capacity=1)
    beat(any_store, clock, node_id="node-c", capacity=50, draining=True)  # leaving: takes no new calls
    async with control_api(twilio, any_store, clock=clock, node=False) as api:
        assert [(await make_call(api)).status_code for _ in range(3)] == [201, 201, 503]
        health = (await api.get("/healthz")).json()
        assert (health["status"], health["media_nodes"], health["capacity"]) == ("ok", 3, 2)


async def test_all_in_one_sees_its_own_drain_at_once(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    clock = Clock()
    state = {"draining": False}
    plane = LocalMediaPlane(lambda: heartbeat(clock, **state), not_configured_detail="GEMINI_API_KEY is not set")
    async with control_api(twilio, sqlite_store, clock=clock, media_plane=plane) as api:
        assert (await make_call(api)).status_code == 201
        state["draining"] = True  # SIGTERM: no heartbeat round trip needed
        r = await make_call(api)
        assert r.status_code == 503 and r.json()["error"]["code"] == "draining"
    assert twilio.dials == 1


async def test_no_gemini_key_on_the_local_node_is_named(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    clock = Clock()
    plane = LocalMediaPlane(lambda: heartbeat(clock, configured=False), "GEMINI_API_KEY is not set")
    async with control_api(twilio, sqlite_store, clock=clock, media_plane=plane) as api:
        r = await make_call(api)
        assert r.status_code == 503 and "GEMINI_API_KEY" in r.json()["error"]["message"]
        health = await api.get("/healthz")
        assert health.json()["status"] == "not_configured" and "GEMINI" not in health.text
    assert twilio.dials == 0


async def test_the_check_order_is_key_body_destination_media_plane(
    twilio: TwilioRestStandIn, sqlite_store: CallStore
) -> None:
    clock = Clock()
    beat(sqlite_store, clock, draining=True)
    async with control_api(twilio, sqlite_store, clock=clock, node=False) as api:
        bad_body = b'{"destination_number": 5'
        assert (await api.post("/make-call", content=bad_body)).status_code == 401
        assert (await api.post("/make-call", content=bad_body, headers=AUTH)).status_code == 400
        assert (await make_call(api, {"destination_number": "+447700900123"})).status_code == 403
        assert (await make_call(api)).status_code == 503
    assert twilio.dials == 0


async def test_optional_pacing_holds_across_app_instances(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    """Two control planes (two Lambda containers) on one store share one MAKE_CALL_RATE_PER_MIN budget."""
    clock = Clock()
    clock.now = (int(clock.now) // 60) * 60 + 1.0  # early in a minute window
    beat(any_store, clock)
    async with (
        control_api(twilio, any_store, clock=clock, node=False, make_call_rate_per_min=3) as one,
        control_api(twilio, any_store, clock=clock, node=False, make_call_rate_per_min=3) as two,
    ):
        codes = [(await make_call(api)).status_code for api in (one, two, one, two)]
        assert codes == [201, 201, 201, 429]
        limited = await make_call(one)
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        clock.now += 60
        assert (await make_call(two)).status_code == 201
    assert twilio.dials == 4


async def test_healthz_answers_503_only_when_the_store_is_down(twilio: TwilioRestStandIn, tmp_path: Path) -> None:
    store = FlakyStore(SqliteCallStore(str(tmp_path / "calls.db")))
    async with control_api(twilio, store) as api:
        assert (await api.get("/healthz")).status_code == 200
        store.fail["node_heartbeats"] = -1
        down = await api.get("/healthz")
        assert down.status_code == 503 and down.json()["status"] == "store_unavailable"


def test_heartbeat_rule_is_sans_io() -> None:
    clock = Clock()
    assert admit([]).state is PlaneState.UNAVAILABLE
    assert admit([heartbeat(clock, draining=True)]).state is PlaneState.DRAINING
    assert admit([heartbeat(clock, configured=False, draining=True)]).state is PlaneState.NOT_CONFIGURED
    assert admit([heartbeat(clock, capacity=5)], live_calls=5).state is PlaneState.FULL
    ok = admit([heartbeat(clock, capacity=5), heartbeat(clock, node_id="b", capacity=7)], live_calls=11)
    assert ok.ok and ok.capacity == 12 and ok.retry_after == 0
