"""Two real processes writing the same calls at the same time (the blue and green colours of an upgrade on one
VPS share one SQLite file): nothing is lost, nothing is doubled, every conditional write has one winner.

Also run against DynamoDB Local (two processes, one table), where the same guarantees hold by conditional writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from call_state.dynamo_store import DynamoCallStore
from call_state.record import CallStatus
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore, open_store
from tests.store_worker import CAPACITY, SHARED, STATUSES
from tests.test_store_contract import NOW, make_record

ROOT = Path(__file__).resolve().parent.parent


def _setup(store: CallStore, rounds: int) -> None:
    for call_id in SHARED:
        store.create_call(make_record(call_id, created_at=NOW - 10))
    for i in range(rounds):
        store.create_call(make_record(f"race-{i}", created_at=NOW - 10))


def _run_two(url: str, endpoint: str, rounds: int) -> list[dict[str, list[str]]]:
    start_at = time.time() + 1.5  # both import first, then write together
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "tests.store_worker", url, endpoint, str(w), str(rounds),
                          str(start_at)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for w in (1, 2)
    ]  # fmt: skip
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err.decode()[-2000:]
        results.append(json.loads(out))
    return results


@pytest.mark.parametrize("backend", ["sqlite", "dynamodb-local"])
def test_two_processes_writing_the_same_calls(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    rounds = 150 if backend == "sqlite" else 40
    if backend == "sqlite":
        url, endpoint = f"sqlite:///{tmp_path / 'calls.db'}", ""
        store: CallStore = SqliteCallStore(str(tmp_path / "calls.db"))
    else:
        endpoint = request.getfixturevalue("dynamodb_local_endpoint")
        table = f"procs-{uuid.uuid4().hex[:10]}"
        url = f"dynamodb://{table}"
        dynamo = DynamoCallStore.from_table_name(table, endpoint_url=endpoint, region="us-east-1")
        dynamo.create_table()
        store = dynamo
    _setup(store, rounds)
    first, second = _run_two(url, endpoint, rounds)
    reader = open_store(url, dynamodb_endpoint_url=endpoint or None, region="us-east-1")

    for n, call_id in enumerate(SHARED):
        record = reader.get_call(call_id, NOW)
        assert record is not None
        expected = 2 * len(range(n, rounds, len(SHARED)))
        assert len(record.transcript) == expected, call_id  # every turn of both processes, none lost
        statuses = [e.status for e in record.status_history]
        assert sorted(statuses) == sorted([CallStatus.CREATED, *STATUSES]), call_id  # each event once
        assert record.status is max(STATUSES, key=lambda s: s.rank)
    streams = first["streams"] + second["streams"]
    assert sorted(streams) == sorted(f"race-{i}" for i in range(rounds))  # one winner per call, never two
    keys = first["keys"] + second["keys"]
    assert Counter(keys) == Counter(f"key-{i}" for i in range(rounds))
    assert Counter(first["slots"] + second["slots"]) == {"0": 10, "1": 10, "2": 10}  # never past the limit
    created = first["created"] + second["created"]
    if backend == "sqlite":  # counted and inserted in one transaction: exact across processes
        assert len(created) == CAPACITY
    assert len(created) >= CAPACITY
    assert reader.count_live_calls(NOW - 1, NOW) == len(created)
