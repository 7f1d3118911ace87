"""Store contract, part two: Idempotency-Key claims, node heartbeats, the sweep and the start-up probe.

Every test runs on SQLite, moto and real DynamoDB Local (`any_store`), except where moto's thread safety forbids.
"""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from call_state.nodes import NodeHeartbeat
from call_state.record import StatusEvent, StreamEvent, TranscriptTurn
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore, IdemState
from tests.test_store_contract import NOW, make_record

TTL, LEASE = 3600, 30.0


def claim(store: CallStore, holder: str, call_id: str = "call-a", body: str = "hash-a", now: float = NOW):  # type: ignore[no-untyped-def]
    return store.claim_idempotency_key("key-1", body, call_id, holder, now, TTL, LEASE)


def test_first_claim_wins_then_retries_see_its_progress(any_store: CallStore) -> None:
    first = claim(any_store, "h1")
    assert (first.claimed, first.call_id, first.state, first.holder) == (True, "call-a", IdemState.CLAIMED, "h1")
    again = claim(any_store, "h2", "call-b")
    assert not again.claimed and again.call_id == "call-a" and again.response is None
    assert again.state is IdemState.CLAIMED and again.lease_until == NOW + LEASE
    assert any_store.mark_idempotency_dialling("key-1", "h1", NOW)
    assert claim(any_store, "h2", "call-b").state is IdemState.DIALLING
    any_store.complete_idempotency_key("key-1", {"call_id": "call-a", "status": "queued"})
    done = claim(any_store, "h3", "call-c", body="hash-b")
    assert (done.claimed, done.body_hash, done.state) == (False, "hash-a", IdemState.DONE)
    assert done.response == {"call_id": "call-a", "status": "queued"}
    assert claim(any_store, "h4", "call-d", now=NOW + TTL + 1).claimed  # an expired key starts over


def test_a_dead_claim_is_taken_over_after_its_lease_with_the_same_call(any_store: CallStore) -> None:
    claim(any_store, "crashed")
    assert not claim(any_store, "early", "call-x", now=NOW + LEASE - 1).claimed  # lease still running
    assert not claim(any_store, "other-body", "call-x", body="hash-z", now=NOW + LEASE + 1).claimed
    taken = claim(any_store, "retry", "call-x", now=NOW + LEASE + 1)
    assert taken.claimed and taken.call_id == "call-a" and taken.holder == "retry"
    assert not any_store.mark_idempotency_dialling("key-1", "crashed", NOW + LEASE + 2)  # the old holder may not dial
    assert any_store.mark_idempotency_dialling("key-1", "retry", NOW + LEASE + 2)


def test_a_dialling_key_is_never_taken_over_or_released(any_store: CallStore) -> None:
    claim(any_store, "h1")
    assert any_store.mark_idempotency_dialling("key-1", "h1", NOW)
    assert not any_store.mark_idempotency_dialling("key-1", "h1", NOW)  # once
    late = claim(any_store, "h2", "call-b", now=NOW + 10 * LEASE)
    assert not late.claimed and late.state is IdemState.DIALLING and late.call_id == "call-a"
    any_store.release_idempotency_key("key-1", "h2")  # not its holder: no effect
    assert not claim(any_store, "h3", now=NOW + 10 * LEASE).claimed


def test_release_by_the_holder_lets_a_retry_dial_at_once(any_store: CallStore) -> None:
    claim(any_store, "h1")
    any_store.release_idempotency_key("key-1", "someone-else")
    assert not claim(any_store, "h2", "call-b").claimed
    any_store.release_idempotency_key("key-1", "h1")
    fresh = claim(any_store, "h2", "call-b")
    assert fresh.claimed and fresh.call_id == "call-b"
    any_store.complete_idempotency_key("key-1", {"call_id": "call-b"})
    any_store.release_idempotency_key("key-1", "h2")  # an answered key stays
    assert claim(any_store, "h3").response == {"call_id": "call-b"}


@pytest.mark.parametrize("backend", ["sqlite_store", "dynamodb_local_store"], ids=["sqlite", "dynamodb-local"])
def test_concurrent_claims_and_takeovers_have_one_winner(backend: str, request: pytest.FixtureRequest) -> None:
    store: CallStore = request.getfixturevalue(backend)
    lock, won = threading.Lock(), []

    def race(holder: str, now: float) -> None:
        got = store.claim_idempotency_key("race", "h", f"call-{holder}", holder, now, TTL, LEASE)
        with lock:
            won.append(got.claimed)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: race(f"a{i}", NOW), range(20)))
    assert won.count(True) == 1
    won.clear()
    with ThreadPoolExecutor(10) as pool:  # the winner died: of many retries after the lease, one takes over
        list(pool.map(lambda i: race(f"b{i}", NOW + LEASE + 1), range(20)))
    assert won.count(True) == 1


def beat(node: str, at: float, **kw: object) -> NodeHeartbeat:
    fields: dict[str, object] = {"draining": False, "configured": True, "active_calls": 3, "capacity": 100}
    fields.update(kw)
    return NodeHeartbeat(node, at=at, url=f"http://{node}.internal:8081", **fields)  # type: ignore[arg-type]


def test_node_heartbeats_replace_and_go_stale(any_store: CallStore) -> None:
    any_store.put_node_heartbeat(beat("node-b", NOW), 30)
    any_store.put_node_heartbeat(beat("node-a", NOW), 30)
    any_store.put_node_heartbeat(beat("node-a", NOW + 5, draining=True, active_calls=7), 30)
    fresh = any_store.node_heartbeats(NOW + 10)
    assert [h.node_id for h in fresh] == ["node-a", "node-b"]
    assert fresh[0] == beat("node-a", NOW + 5, draining=True, active_calls=7)  # the latest one, every field
    assert [h.node_id for h in any_store.node_heartbeats(NOW + 31)] == ["node-a"]  # node-b missed its beats
    assert any_store.node_heartbeats(NOW + 36) == []


def test_sweep_keeps_live_data_and_reads_never_see_expired(any_store: CallStore) -> None:
    any_store.create_call(make_record("keep", ttl=10_000))
    any_store.create_call(make_record("old", ttl=10))
    any_store.add_turn("old", TranscriptTurn(0, "agent", "hi", NOW))
    any_store.claim_idempotency_key("k-old", "h", "old", "h1", NOW, 10, LEASE)
    assert any_store.sweep_expired(NOW + 20) >= 0
    assert any_store.get_call("old", NOW + 20) is None and any_store.get_call("keep", NOW + 20) is not None
    assert any_store.claim_idempotency_key("k-old", "h", "x", "h2", NOW + 20, 10, LEASE).claimed


def _rows(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def test_sqlite_sweep_deletes_expired_rows_in_bounded_passes(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    store = SqliteCallStore(str(path))
    for i in range(1100):
        store.create_call(make_record(f"old-{i}", ttl=10))
    store.create_call(make_record("keep", ttl=10_000))
    for i in range(3):
        store.add_turn("old-0", TranscriptTurn(i, "agent", "t", NOW))
        store.add_turn("keep", TranscriptTurn(i, "agent", "t", NOW))
    store.add_stream_event("old-1", StreamEvent("stream-started", NOW))
    store.apply_status("old-2", StatusEvent(make_record().status, NOW), NOW)
    store.claim_idempotency_key("k", "h", "old-3", "h1", NOW, 10, LEASE)
    store.take_rate_slot("k", 1, 5, int(NOW) + 10)
    store.put_node_heartbeat(beat("gone", NOW - 7200), 30)
    store.put_node_heartbeat(beat("here", NOW), 30)
    first = store.sweep_expired(NOW + 20)  # one pass: at most 4 batches of 500 calls
    assert first > 1100
    assert store.sweep_expired(NOW + 20) == 0  # nothing left: the sweeper stops repeating
    assert _rows(path, "calls") == 1 and _rows(path, "turns") == 3
    assert _rows(path, "stream_events") == 0 and _rows(path, "status_events") == 1  # keep's "created"
    assert _rows(path, "idempotency") == 0 and _rows(path, "rate_windows") == 0
    assert _rows(path, "node_heartbeats") == 1
    store.close()


def test_sqlite_write_probe_fails_on_a_read_only_database(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    SqliteCallStore(str(path)).check_writable(NOW)  # a writable file passes

    def read_only(database: str, **kwargs: object) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{database}?mode=ro", uri=True, **kwargs)  # type: ignore[arg-type]

    store = SqliteCallStore(str(path), connect=read_only)  # opens: every table exists already
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        store.check_writable(NOW)
