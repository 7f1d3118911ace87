"""The store contract, continued: the end of a call (who completes the pair) and the webhook outbox's jobs.

Every case on SQLite, moto and a real DynamoDB Local (`any_store`); the concurrency cases on SQLite and DynamoDB
Local only (moto's in-memory DynamoDB is not thread-safe, see test_store_contract.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallNotFound, CallStore
from call_state.webhook_jobs import JobKind, WebhookJob
from tests.test_store_contract import NOW, make_record

STREAM = "MZ" + "5" * 32
CONCURRENT = pytest.mark.parametrize(
    "backend", ["sqlite_store", "dynamodb_local_store"], ids=["sqlite", "dynamodb-local"]
)


def streamed_call(store: CallStore, call_id: str = "call-1") -> None:
    store.create_call(make_record(call_id))
    store.claim_stream(call_id, STREAM, "node-a", NOW)


def test_media_first_then_status_completes_once(any_store: CallStore) -> None:
    streamed_call(any_store)
    assert any_store.media_done("call-1", NOW + 1) is False  # Twilio has not said the call is over
    assert any_store.media_done("call-1", NOW + 2) is False  # a repeat
    assert any_store.status_done("call-1", NOW + 3) is True  # the second side completes the pair
    assert [any_store.status_done("call-1", NOW + 4), any_store.media_done("call-1", NOW + 5)] == [False, False]


def test_status_first_then_media_completes_once(any_store: CallStore) -> None:
    streamed_call(any_store)
    assert any_store.status_done("call-1", NOW + 1) is False  # the media node still writes its last turns
    assert any_store.status_done("call-1", NOW + 2) is False  # a replayed callback
    assert any_store.media_done("call-1", NOW + 3) is True
    assert any_store.media_done("call-1", NOW + 4) is False


def test_a_call_without_a_stream_needs_only_the_status(any_store: CallStore) -> None:
    any_store.create_call(make_record())  # busy, no answer, a failed dial: no media node ever had it
    assert any_store.status_done("call-1", NOW + 1) is True
    assert any_store.status_done("call-1", NOW + 2) is False
    assert any_store.media_done("call-1", NOW + 3) is False


def test_unknown_calls_raise_and_store_nothing(any_store: CallStore) -> None:
    for mark in (any_store.media_done, any_store.status_done):
        with pytest.raises(CallNotFound):
            mark("ghost", NOW)
    assert any_store.get_call("ghost", NOW) is None


def test_marks_leave_the_record_alone(any_store: CallStore) -> None:
    streamed_call(any_store)
    before = any_store.get_call("call-1", NOW)
    any_store.media_done("call-1", NOW + 1)
    any_store.update_call("call-1", NOW + 2, error="written between the marks")
    any_store.status_done("call-1", NOW + 3)
    after = any_store.get_call("call-1", NOW)
    assert before is not None and after is not None
    assert after == before.with_changes(error="written between the marks")


@CONCURRENT
def test_concurrent_sides_and_replays_complete_the_pair_exactly_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: CallStore = request.getfixturevalue(backend)
    for i in range(6):
        streamed_call(store, f"race-{i}")
    start = threading.Barrier(12)

    def side(args: tuple[int, int]) -> bool:
        call, n = args
        start.wait(timeout=10)
        mark = store.media_done if n % 2 else store.status_done
        return mark(f"race-{call}", NOW + n)

    for call in range(6):  # twelve callers per call: both sides, each replayed six times, all at once
        with ThreadPoolExecutor(12) as pool:
            completed = list(pool.map(side, [(call, n) for n in range(12)]))
        start.reset()
        assert sum(completed) == 1, (call, completed)


def job(call_id: str = "call-1", kind: JobKind = JobKind.DELIVER, due: float = NOW) -> WebhookJob:
    return WebhookJob(call_id, kind, due)


def test_jobs_are_claimed_when_due_and_leased(any_store: CallStore) -> None:
    any_store.add_webhook_job(job("a"), int(NOW) + 3600)
    any_store.add_webhook_job(job("a", JobKind.DEADLINE, NOW + 120), int(NOW) + 3600)
    any_store.add_webhook_job(job("b", due=NOW - 5), int(NOW) + 3600)
    any_store.add_webhook_job(job("a", due=NOW + 999), int(NOW) + 3600)  # the same call and kind: kept as it was
    assert any_store.claim_webhook_jobs(NOW - 10, 60, 10) == []
    assert any_store.claim_webhook_jobs(NOW, 60, 10) == [job("b", due=NOW - 5), job("a")]  # oldest due first
    assert any_store.claim_webhook_jobs(NOW + 30, 60, 10) == []  # leased: nobody else attempts them
    assert any_store.claim_webhook_jobs(NOW + 61, 1000, 1) == [job("b", due=NOW - 5)]  # the lease ran out
    any_store.reschedule_webhook_job(job("a"), NOW + 200)
    assert any_store.claim_webhook_jobs(NOW + 130, 1000, 10) == [job("a", JobKind.DEADLINE, NOW + 120)]
    assert any_store.claim_webhook_jobs(NOW + 200, 60, 10) == [job("a")]  # rescheduled, and its lease released
    for finished in (job("a"), job("b", due=NOW - 5), job("a", JobKind.DEADLINE, NOW + 120)):
        any_store.remove_webhook_job(finished)
    any_store.remove_webhook_job(job("never-queued"))
    assert any_store.claim_webhook_jobs(NOW + 10_000, 60, 10) == []


@CONCURRENT
def test_concurrent_workers_never_claim_one_job_twice(backend: str, request: pytest.FixtureRequest) -> None:
    store: CallStore = request.getfixturevalue(backend)
    for i in range(20):
        store.add_webhook_job(job(f"c{i}", due=NOW + i / 100), int(NOW) + 3600)
    claimed: list[str] = []
    for _ in range(5):  # a worker that loses a race for a job claims fewer: the next round takes the rest
        with ThreadPoolExecutor(8) as pool:
            claims = list(pool.map(lambda _: store.claim_webhook_jobs(NOW + 1, 60, 4), range(8)))
        claimed += [j.call_id for batch in claims for j in batch]
    assert len(claimed) == len(set(claimed)) == 20  # every job once, none twice


def test_the_sweep_takes_the_jobs_of_expired_calls(sqlite_store: SqliteCallStore) -> None:
    sqlite_store.create_call(make_record("short", ttl=10))
    sqlite_store.add_webhook_job(job("short"), int(NOW) + 10)
    sqlite_store.add_webhook_job(job("orphan"), int(NOW) + 10)  # its call never existed
    assert sqlite_store.sweep_expired(NOW + 11) >= 3
    assert sqlite_store.claim_webhook_jobs(NOW + 11, 60, 10) == []


def test_files_from_before_the_end_of_call_columns_open(tmp_path: pytest.TempPathFactory) -> None:
    import sqlite3

    path = str(tmp_path / "old.db")  # type: ignore[operator]
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE calls (call_id TEXT PRIMARY KEY, created_at REAL NOT NULL, expires_at INTEGER NOT NULL, "
               "status TEXT NOT NULL, head TEXT NOT NULL)")  # fmt: skip
    db.commit()
    db.close()
    store = SqliteCallStore(path)
    streamed_call(store)
    assert store.status_done("call-1", NOW) is False and store.media_done("call-1", NOW) is True
    store.close()
