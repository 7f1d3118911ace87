"""One failed statement, then the next write works: on SQLite, moto and DynamoDB Local.

The backends' own client is wrapped so that exactly one low-level call fails: the k-th `execute` on the SQLite
connection (BEGIN and COMMIT included) or the k-th DynamoDB API call. For every write method and every k until the
method runs clean, the test checks that nothing was half-written, that the same write then succeeds, and that a
later write is committed (a second connection sees it: no transaction was left open on the shared one).
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from call_state.dynamo_store import DynamoCallStore
from call_state.nodes import NodeHeartbeat
from call_state.record import CallFigures, CallRecord, CallStatus, StatusEvent, StreamEvent, TranscriptTurn
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore, IdempotencyClaim, IdemState
from tests.test_store_contract import NOW, make_record


class Injected(Exception):
    """Raised where the test armed a fault."""


class FaultyConnection:
    """A sqlite3 connection whose k-th execute from now raises (like a full disk or an I/O error)."""

    def __init__(self, real: sqlite3.Connection, faults: Faults) -> None:
        self._real, self._faults = real, faults

    def execute(self, sql: str, args: Any = ()) -> sqlite3.Cursor:
        self._faults.tick(sql)
        return self._real.execute(sql, args)

    def executemany(self, sql: str, args: Any) -> sqlite3.Cursor:
        self._faults.tick(sql)
        return self._real.executemany(sql, args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class FaultyClient:
    """A boto3 DynamoDB client whose k-th API call from now raises a ClientError."""

    def __init__(self, real: Any, faults: Faults) -> None:
        self._real, self._faults = real, faults

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if not callable(method) or name.startswith("_") or name in ("meta", "exceptions"):
            return method

        def call(**kwargs: Any) -> Any:
            try:
                self._faults.tick(name)
            except Injected:
                raise ClientError({"Error": {"Code": "InternalServerError", "Message": "injected"}}, name) from None
            return method(**kwargs)

        return call


@dataclass
class Faults:
    armed_at: int | None = None
    calls: int = 0
    fired: bool = False

    def arm(self, k: int) -> None:
        self.armed_at, self.calls, self.fired = k, 0, False

    def disarm(self) -> None:
        self.armed_at = None

    def tick(self, what: str) -> None:
        if self.armed_at is None:
            return
        self.calls += 1
        if self.calls - 1 == self.armed_at:
            self.armed_at, self.fired = None, True
            raise Injected(what)


@dataclass
class Rig:
    store: CallStore
    faults: Faults
    reader: Callable[[], CallStore]  # a second connection / client onto the same data
    in_transaction: Callable[[], bool]


@pytest.fixture(params=["sqlite", "moto", "dynamodb-local"])
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Rig]:
    faults = Faults()
    if request.param == "sqlite":
        path = str(tmp_path / "calls.db")
        opened: list[FaultyConnection] = []

        def connect(database: str, **kwargs: Any) -> sqlite3.Connection:
            conn = FaultyConnection(sqlite3.connect(database, **kwargs), faults)
            opened.append(conn)
            return conn  # type: ignore[return-value]

        yield Rig(SqliteCallStore(path, connect=connect), faults, lambda: SqliteCallStore(path),
                  lambda: opened[-1].in_transaction)  # fmt: skip
        return
    if request.param == "moto":
        from moto import mock_aws

        with mock_aws():
            client = boto3.client("dynamodb", region_name="us-east-1")
            store = DynamoCallStore(FaultyClient(client, faults), "faults")
            store.create_table()
            yield Rig(store, faults, lambda: DynamoCallStore(client, "faults"), lambda: False)
        return
    endpoint = request.getfixturevalue("dynamodb_local_endpoint")
    client = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    table = f"faults-{uuid.uuid4().hex[:10]}"
    store = DynamoCallStore(FaultyClient(client, faults), table)
    store.create_table()
    yield Rig(store, faults, lambda: DynamoCallStore(client, table), lambda: False)


def beat(node: str) -> NodeHeartbeat:
    return NodeHeartbeat(node, False, True, 1, 10, NOW)


def _call(store: CallStore, call_id: str) -> CallRecord:
    got = store.get_call(call_id, NOW)
    assert got is not None
    return got


def _claim(store: CallStore, key: str, holder: str, now: float = NOW) -> IdempotencyClaim:
    return store.claim_idempotency_key(key, "h", f"call-{holder}", holder, now, 60, 30)


Step = Callable[[CallStore, str], object]
# Each case, for a tag t (fresh ids per attempt): prepare, the write under test, and a check that must hold once
# the write has succeeded (checked on this store and on a second connection, so it must not change anything).
# Every injected fault fires before its statement runs, so a retry must succeed.
CASES: dict[str, tuple[Step, Step, Callable[[CallStore, str], bool]]] = {
    "create_call": (
        lambda s, t: None,
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.get_call(t, NOW) == make_record(t),
    ),
    "create_call_within_capacity": (
        lambda s, t: None,
        lambda s, t: s.create_call(make_record(t), max_live=1000, live_since=NOW - 60),
        lambda s, t: s.get_call(t, NOW) == make_record(t),
    ),
    "apply_status": (
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.apply_status(t, StatusEvent(CallStatus.RINGING, NOW + 1, 1), NOW),
        lambda s, t: _call(s, t).status is CallStatus.RINGING and len(_call(s, t).status_history) == 2,
    ),
    "update_call": (
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.update_call(t, NOW, call_sid="CA" + "1" * 32, figures=CallFigures(1.0, 1)),
        lambda s, t: _call(s, t).call_sid == "CA" + "1" * 32 and _call(s, t).figures.barge_ins == 1,
    ),
    "claim_stream": (
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.claim_stream(t, "MZ" + "2" * 32, "node-a", NOW),
        lambda s, t: _call(s, t).stream_sid == "MZ" + "2" * 32,
    ),
    "add_turn": (
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.add_turn(t, TranscriptTurn(0, "agent", "hello", NOW)),
        lambda s, t: [x.text for x in _call(s, t).transcript] == ["hello"],
    ),
    "add_stream_event": (
        lambda s, t: s.create_call(make_record(t)),
        lambda s, t: s.add_stream_event(t, StreamEvent("stream-started", NOW)),
        lambda s, t: len(_call(s, t).stream_events) == 1,
    ),
    "claim_idempotency_key": (
        lambda s, t: None,
        lambda s, t: _claim(s, t, "first"),
        lambda s, t: _claim(s, t, "second").call_id == "call-first",
    ),
    "take_over_idempotency_key": (
        lambda s, t: _claim(s, t, "dead"),
        lambda s, t: _claim(s, t, "retry", NOW + 31),
        lambda s, t: _claim(s, t, "probe", NOW + 32).holder == "retry",
    ),
    "mark_idempotency_dialling": (
        lambda s, t: _claim(s, t, "first"),
        lambda s, t: s.mark_idempotency_dialling(t, "first", NOW),
        lambda s, t: _claim(s, t, "late", NOW + 40).state is IdemState.DIALLING,
    ),
    "complete_idempotency_key": (
        lambda s, t: _claim(s, t, "first"),
        lambda s, t: s.complete_idempotency_key(t, {"call_id": t}),
        lambda s, t: _claim(s, t, "second").response == {"call_id": t},
    ),
    "release_idempotency_key": (
        lambda s, t: _claim(s, t, "first"),
        lambda s, t: s.release_idempotency_key(t, "first"),
        lambda s, t: _claim(s, t, "probe").holder == "probe",  # claimed anew once released
    ),
    "take_rate_slot": (
        lambda s, t: s.take_rate_slot(t, 1, 2, int(NOW)),
        lambda s, t: s.take_rate_slot(t, 1, 2, int(NOW)),
        lambda s, t: not s.take_rate_slot(t, 1, 2, int(NOW)),  # exactly two counted: the failed try counted none
    ),
    "put_node_heartbeat": (
        lambda s, t: None,
        lambda s, t: s.put_node_heartbeat(beat(t), 30),
        lambda s, t: beat(t) in s.node_heartbeats(NOW),
    ),
    "sweep_expired": (
        lambda s, t: s.create_call(make_record(t, ttl=5)),
        lambda s, t: s.sweep_expired(NOW + 10),
        lambda s, t: s.get_call(t, NOW + 10) is None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_failed_statement_then_the_next_write_works(rig: Rig, case: str) -> None:
    prepare, write, check = CASES[case]
    for k in range(40):  # fail the 1st, 2nd, ... low-level call of the write, until it runs without reaching k
        tag = f"{case}-{k}"
        prepare(rig.store, tag)
        rig.faults.arm(k)
        try:
            write(rig.store, tag)
        except (Injected, ClientError):
            assert rig.faults.fired
        rig.faults.disarm()
        assert not rig.in_transaction(), "the connection was left inside a transaction"
        if not rig.faults.fired:
            assert check(rig.store, tag) and check(rig.reader(), tag)
            return
        if case.startswith("create_call"):
            got = rig.store.get_call(tag, NOW)
            assert got is None, "a failed create left part of a record"
        rig.store.create_call(make_record(f"control-{tag}"))  # the next write works, and is committed:
        assert rig.reader().get_call(f"control-{tag}", NOW) is not None  # another connection sees it
        write(rig.store, tag)  # and the write that failed works when tried again
        assert check(rig.store, tag) and check(rig.reader(), tag)
    pytest.fail("the write never ran clean")
