"""One contract, every backend: SQLite, moto and real DynamoDB Local must behave the same."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from call_state.record import (
    AgentSettings,
    CallFigures,
    CallRecord,
    CallStatus,
    Direction,
    Recording,
    StatusEvent,
    StreamEvent,
    ToolCallRecord,
    TranscriptTurn,
)
from call_state.store import CallExists, CallNotFound, CallStore, NoCapacity, StreamAlreadyClaimed

NOW = 1_800_000_000.0
AGENT = AgentSettings("Be brief.", "Say hello.", "Puck", "en-US")


def make_record(call_id: str = "call-1", created_at: float = NOW, ttl: int = 3600) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        direction=Direction.OUTBOUND,
        to="+15551230000",
        from_="+15559870000",
        agent=AGENT,
        created_at=created_at,
        expires_at=int(created_at) + ttl,
        metadata={"crm_id": 42, "tags": ["a", "b"]},
        status_history=(StatusEvent(CallStatus.CREATED, created_at, None, "api"),),
    )


def test_create_then_get_round_trips(any_store: CallStore) -> None:
    record = make_record()
    any_store.create_call(record)
    got = any_store.get_call("call-1", NOW)
    assert got == record
    assert json.loads(json.dumps(got.to_dict())) == record.to_dict()


def test_create_is_once_only(any_store: CallStore) -> None:
    any_store.create_call(make_record())
    with pytest.raises(CallExists):
        any_store.create_call(make_record())


def test_missing_and_expired_calls_read_as_none(any_store: CallStore) -> None:
    assert any_store.get_call("nope", NOW) is None
    any_store.create_call(make_record("short", ttl=10))
    assert any_store.get_call("short", NOW + 5) is not None
    assert any_store.get_call("short", NOW + 10) is None  # TTL deletion is lazy: reads filter
    with pytest.raises(CallNotFound):
        any_store.apply_status("short", StatusEvent(CallStatus.RINGING, NOW + 11, 1), NOW + 11)


def test_status_out_of_order_and_duplicates(any_store: CallStore) -> None:
    any_store.create_call(make_record())
    events = [
        StatusEvent(CallStatus.RINGING, NOW + 2, 1),
        StatusEvent(CallStatus.IN_PROGRESS, NOW + 3, 2),
        StatusEvent(CallStatus.INITIATED, NOW + 1, 0),  # late
        StatusEvent(CallStatus.IN_PROGRESS, NOW + 3, 2),  # duplicate delivery
        StatusEvent(CallStatus.COMPLETED, NOW + 9, 3, detail="duration=6"),
        StatusEvent(CallStatus.FAILED, NOW + 10, None, "media"),  # after terminal: history only
    ]
    changed = [any_store.apply_status("call-1", e, NOW).status_changed for e in events]
    assert changed == [True, True, False, False, True, False]
    got = any_store.get_call("call-1", NOW)
    assert got is not None
    assert got.status is CallStatus.COMPLETED
    assert [e.status for e in got.status_history] == [
        CallStatus.CREATED,
        CallStatus.INITIATED,
        CallStatus.RINGING,
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
        CallStatus.FAILED,
    ]
    assert got.status_history[4].detail == "duration=6"


# Not on moto: its in-memory DynamoDB is not thread-safe (it races in its own deepcopy), so it cannot judge ours.
@pytest.mark.parametrize("backend", ["sqlite_store", "dynamodb_local_store"], ids=["sqlite", "dynamodb-local"])
def test_concurrent_status_callbacks_lose_nothing(backend: str, request: pytest.FixtureRequest) -> None:
    any_store: CallStore = request.getfixturevalue(backend)
    any_store.create_call(make_record())
    statuses = [CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING, CallStatus.IN_PROGRESS]
    events = [StatusEvent(s, NOW + i, i) for i, s in enumerate(statuses) for _ in range(3)]
    with ThreadPoolExecutor(len(events)) as pool:  # every call must succeed: a conflict is retried, never raised
        updates = list(pool.map(lambda e: any_store.apply_status("call-1", e, NOW), events))
    assert sum(u.history_changed for u in updates) == len(statuses)  # each event lands once; duplicates: no-ops
    got = any_store.get_call("call-1", NOW)
    assert got is not None and got.status is CallStatus.IN_PROGRESS
    assert [e.status for e in got.status_history] == [CallStatus.CREATED, *statuses]


def test_update_fields_turns_and_stream_events(any_store: CallStore) -> None:
    any_store.create_call(make_record())
    figures = CallFigures(412.5, 2, 61.2, 40.0, 1)
    any_store.update_call("call-1", NOW, call_sid="CA" + "1" * 32)
    any_store.claim_stream("call-1", "MZ" + "2" * 32, "node-a", NOW)
    any_store.update_call("call-1", NOW, figures=figures, error="gemini closed 1011")
    for i in (2, 0, 1):
        any_store.add_turn("call-1", TranscriptTurn(i, "agent" if i % 2 == 0 else "caller", f"t{i}", NOW + i, i == 2))
    any_store.add_turn("call-1", TranscriptTurn(1, "caller", "t1 corrected", NOW + 1))  # same index replaces
    any_store.add_stream_event("call-1", StreamEvent("stream-started", NOW + 1, "MZ" + "2" * 32))
    any_store.add_stream_event("call-1", StreamEvent("stream-error", NOW + 2, "MZ" + "2" * 32, "31920 handshake"))
    got = any_store.get_call("call-1", NOW)
    assert got is not None
    assert (got.call_sid, got.stream_sid, got.error) == ("CA" + "1" * 32, "MZ" + "2" * 32, "gemini closed 1011")
    assert got.figures == figures
    assert [(t.index, t.text, t.interrupted) for t in got.transcript] == [
        (0, "t0", False),
        (1, "t1 corrected", False),
        (2, "t2", True),
    ]
    assert [e.event for e in got.stream_events] == ["stream-started", "stream-error"]
    assert got.stream_events[1].error == "31920 handshake"
    with pytest.raises(CallNotFound):
        any_store.update_call("nope", NOW, error="x")


def test_long_transcript_is_stored_per_turn(any_store: CallStore) -> None:
    """An hour-long call: ~1,200 turns of ~300 bytes each would be ~400 KB in one item."""
    any_store.create_call(make_record())
    text = "word " * 60
    for i in range(1200):
        any_store.add_turn("call-1", TranscriptTurn(i, "caller" if i % 2 else "agent", text, NOW + i))
    got = any_store.get_call("call-1", NOW)
    assert got is not None and len(got.transcript) == 1200
    assert got.transcript[-1].index == 1199


def test_list_newest_first_with_cursor(any_store: CallStore) -> None:
    for i in range(7):
        any_store.create_call(make_record(f"call-{i}", created_at=NOW + i))
    any_store.create_call(make_record("expired", created_at=NOW + 10, ttl=1))
    page1 = any_store.list_calls(NOW + 50, limit=3)
    assert [c.call_id for c in page1.calls] == ["call-6", "call-5", "call-4"]
    assert page1.next_cursor
    page2 = any_store.list_calls(NOW + 50, limit=3, cursor=page1.next_cursor)
    assert [c.call_id for c in page2.calls] == ["call-3", "call-2", "call-1"]
    page3 = any_store.list_calls(NOW + 50, limit=3, cursor=page2.next_cursor)
    assert [c.call_id for c in page3.calls] == ["call-0"]
    assert page3.next_cursor is None
    assert all(c.transcript == () for c in page1.calls)
    with pytest.raises(ValueError):
        any_store.list_calls(NOW, cursor="not-a-cursor")


def test_a_stream_is_claimed_once(any_store: CallStore) -> None:
    any_store.create_call(make_record())
    any_store.create_call(make_record("short", ttl=10))
    any_store.claim_stream("call-1", "MZ" + "a" * 32, "node-a", NOW)
    for stream_sid in ("MZ" + "a" * 32, "MZ" + "b" * 32):  # a replay of the same start, or a second stream
        with pytest.raises(StreamAlreadyClaimed):
            any_store.claim_stream("call-1", stream_sid, "node-b", NOW)
    any_store.update_call("call-1", NOW, error="later writes leave the claim alone")
    got = any_store.get_call("call-1", NOW)
    assert got is not None and (got.stream_sid, got.media_node) == ("MZ" + "a" * 32, "node-a")
    listed = any_store.list_calls(NOW).calls
    assert {c.call_id: c.stream_sid for c in listed}["call-1"] == "MZ" + "a" * 32
    with pytest.raises(CallNotFound):
        any_store.claim_stream("nope", "MZ" + "c" * 32, "node-a", NOW)
    with pytest.raises(CallNotFound):
        any_store.claim_stream("short", "MZ" + "c" * 32, "node-a", NOW + 10)  # expired: gone, not claimable


def test_concurrent_stream_claims_have_one_winner(any_store: CallStore) -> None:
    any_store.create_call(make_record())

    def claim(i: int) -> str:
        try:
            any_store.claim_stream("call-1", f"MZ{i:032d}", f"node-{i}", NOW)
            return f"MZ{i:032d}"
        except StreamAlreadyClaimed:
            return ""

    with ThreadPoolExecutor(8) as pool:
        winners = [sid for sid in pool.map(claim, range(8)) if sid]
    got = any_store.get_call("call-1", NOW)
    assert len(winners) == 1 and got is not None and got.stream_sid == winners[0]


def test_callbacks_for_unknown_calls_store_nothing(any_store: CallStore) -> None:
    with pytest.raises(CallNotFound):
        any_store.add_stream_event("ghost", StreamEvent("stream-started", NOW, "MZ" + "1" * 32))
    with pytest.raises(CallNotFound):
        any_store.add_turn("ghost", TranscriptTurn(0, "caller", "hello", NOW))
    any_store.create_call(make_record("ghost"))  # a call created later under that id inherits no orphan rows
    got = any_store.get_call("ghost", NOW)
    assert got is not None and got.stream_events == () and got.transcript == ()


def _status(store: CallStore, call_id: str, status: CallStatus) -> None:
    store.apply_status(call_id, StatusEvent(status, NOW + 1, None), NOW + 1)


def test_live_calls_are_not_terminal_recent_and_unexpired(any_store: CallStore) -> None:
    any_store.create_call(make_record("old", created_at=NOW - 5000))  # before the window
    any_store.create_call(make_record("gone", created_at=NOW - 10, ttl=5))  # expired
    for i, status in enumerate([CallStatus.QUEUED, CallStatus.RINGING, CallStatus.IN_PROGRESS]):
        any_store.create_call(make_record(f"live-{i}", created_at=NOW - i))
        _status(any_store, f"live-{i}", status)
    for i, status in enumerate([CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.FAILED, CallStatus.NO_ANSWER]):
        any_store.create_call(make_record(f"over-{i}", created_at=NOW - i))
        _status(any_store, f"over-{i}", status)
    any_store.create_call(make_record("just-created", created_at=NOW))
    assert any_store.count_live_calls(NOW - 3600, NOW) == 4
    assert any_store.count_live_calls(NOW - 0.5, NOW) == 2  # live-0 and just-created


def test_create_within_capacity(any_store: CallStore) -> None:
    for i in range(3):
        any_store.create_call(make_record(f"c{i}", created_at=NOW + i), max_live=3, live_since=NOW - 60)
    with pytest.raises(NoCapacity):
        any_store.create_call(make_record("c3", created_at=NOW + 3), max_live=3, live_since=NOW - 60)
    assert any_store.get_call("c3", NOW + 3) is None
    _status(any_store, "c0", CallStatus.COMPLETED)  # a call that ends frees its slot
    any_store.create_call(make_record("c3", created_at=NOW + 3), max_live=3, live_since=NOW - 60)
    with pytest.raises(NoCapacity):
        any_store.create_call(make_record("c4", created_at=NOW + 4), max_live=0, live_since=NOW - 60)
    any_store.create_call(make_record("c4", created_at=NOW + 4))  # without max_live nothing is counted


def test_concurrent_creates_never_pass_capacity(sqlite_store: CallStore) -> None:
    """SQLite counts and inserts in one transaction; DynamoDB's count-then-write is documented as best effort."""

    def create(i: int) -> bool:
        try:
            sqlite_store.create_call(make_record(f"r{i}"), max_live=5, live_since=NOW - 60)
            return True
        except NoCapacity:
            return False

    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(create, range(40)))
    assert sum(created) == 5 and sqlite_store.count_live_calls(NOW - 60, NOW) == 5


def test_rate_slots_count_per_key_and_window(any_store: CallStore) -> None:
    assert [any_store.take_rate_slot("k", 100, 3, 6120) for _ in range(5)] == [True, True, True, False, False]
    assert any_store.take_rate_slot("k", 101, 3, 6180)  # the next window starts afresh
    assert any_store.take_rate_slot("other", 100, 3, 6120)  # keys do not share a budget
    assert not any_store.take_rate_slot("k", 100, 3, 6120)


@pytest.mark.parametrize("backend", ["sqlite_store", "dynamodb_local_store"], ids=["sqlite", "dynamodb-local"])
def test_concurrent_rate_slots_never_overshoot(backend: str, request: pytest.FixtureRequest) -> None:
    store: CallStore = request.getfixturevalue(backend)
    with ThreadPoolExecutor(12) as pool:
        taken = list(pool.map(lambda _: store.take_rate_slot("burst", 7, 10, 600), range(30)))
    assert sum(taken) == 10


def test_agent_actions_fields_and_tool_calls(any_store: CallStore) -> None:
    any_store.create_call(make_record())
    any_store.update_call("call-1", NOW, transferred_to="+15551112222", answered_by="machine_end_beep",
                          recording=Recording("RE" + "1" * 32, "https://api.twilio.com/x/RE1", 12.5, 2),
                          webhook={"state": "pending", "event_id": "ev_1"})  # fmt: skip
    later = ToolCallRecord("fc_2", "book_slot", {"day": "monday"}, "ok", 41.0, NOW + 2)
    any_store.add_tool_call("call-1", later)
    any_store.add_tool_call("call-1", ToolCallRecord("fc_1", "transfer_call", {}, "error", 5.0, NOW + 1, "refused"))
    any_store.add_tool_call("call-1", ToolCallRecord("fc_2", "book_slot", {"day": "monday"}, "ok", 42.0, NOW + 2))
    got = any_store.get_call("call-1", NOW)
    assert got is not None
    assert (got.transferred_to, got.answered_by) == ("+15551112222", "machine_end_beep")
    assert got.recording == Recording("RE" + "1" * 32, "https://api.twilio.com/x/RE1", 12.5, 2)
    assert got.webhook == {"state": "pending", "event_id": "ev_1"}
    assert [(c.tool_call_id, c.status, c.ms) for c in got.tool_calls] == [("fc_1", "error", 5.0), ("fc_2", "ok", 42.0)]
    assert got.to_dict()["tool_calls"][1]["arguments"] == {"day": "monday"}
    with pytest.raises(CallNotFound):
        any_store.add_tool_call("nope", later)
