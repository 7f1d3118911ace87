"""One contract, every backend: SQLite, moto and real DynamoDB Local must behave the same."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from call_state.record import (
    AgentSettings,
    CallFigures,
    CallRecord,
    CallStatus,
    Direction,
    StatusEvent,
    StreamEvent,
    TranscriptTurn,
)
from call_state.store import CallExists, CallNotFound, CallStore, StreamAlreadyClaimed

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


def test_idempotency_claims_once(any_store: CallStore) -> None:
    first = any_store.claim_idempotency_key("key-1", "hash-a", "call-a", NOW, 60)
    assert first.claimed
    again = any_store.claim_idempotency_key("key-1", "hash-a", "call-b", NOW, 60)
    assert not again.claimed and again.call_id == "call-a" and again.response is None
    any_store.complete_idempotency_key("key-1", {"call_id": "call-a", "status": "queued"})
    done = any_store.claim_idempotency_key("key-1", "hash-b", "call-c", NOW, 60)
    assert (done.claimed, done.body_hash, done.response) == (False, "hash-a", {"call_id": "call-a", "status": "queued"})
    assert any_store.claim_idempotency_key("key-1", "hash-b", "call-d", NOW + 61, 60).claimed  # expired key
    any_store.release_idempotency_key("key-1")
    assert any_store.claim_idempotency_key("key-1", "hash-c", "call-e", NOW, 60).claimed


def test_concurrent_claims_have_one_winner(any_store: CallStore) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        claim = any_store.claim_idempotency_key("race", "h", f"call-{i}", NOW, 60)
        with lock:
            results.append(claim.claimed)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1 and len(results) == 20


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
