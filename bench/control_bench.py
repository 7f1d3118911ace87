"""Control plane: cold import of the Lambda handler, warm /make-call and status webhook time through Mangum.

    bench/.venv/bin/python -m bench.control_bench [--quick]

- cold import: `import lambda_api.handler` in a fresh interpreter (what a Lambda cold start pays before the
  first request), median of several runs, and the interpreter start alone for reference.
- warm: API Gateway HTTP API v2 events (tests/fixtures/apigw) through the same Mangum adapter the Lambda uses,
  SQLite store, then a real DynamoDB Local (the Lambda's store, loopback), Twilio = the loopback REST stand-in
  (its loopback round trip is included and shown apart).
  A media node heartbeat is in the store, so each /make-call pays the admission check as on Lambda (heartbeats
  read, live calls counted as the record is created); once without and once with an Idempotency-Key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import numpy as np
from mangum import Mangum
from twilio.request_validator import RequestValidator

from call_state.dynamo_store import DynamoCallStore
from call_state.nodes import NodeHeartbeat, live_window_seconds
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from lambda_api.app import create_app
from tests.standins import dynamodb_local
from tests.standins.twilio_rest import TwilioRestStandIn

ROOT = Path(__file__).resolve().parent.parent

FIXTURES = ROOT / "tests" / "fixtures" / "apigw"
ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "bench-auth-token-not-real"
API_KEY = "bench-api-key-not-real-0123456789"
API_URL = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
T = TypeVar("T")


def cold_import_ms(runs: int) -> tuple[float, float]:
    """Median ms of `import lambda_api.handler` in a fresh interpreter, and of the bare interpreter start."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}

    def once(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)
        return (time.perf_counter() - start) * 1000

    once("import lambda_api.handler")  # warm the page cache and write .pyc once, as a deployed bundle has them
    handler = float(np.median([once("import lambda_api.handler") for _ in range(runs)]))
    bare = float(np.median([once("pass") for _ in range(runs)]))
    return handler, bare


def event(fixture: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / fixture).read_text())
    return loaded


def warm(n: int, store: CallStore) -> dict[str, list[float]]:
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = Settings.from_env({
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "GEMINI_API_KEY": "bench-not-real",
            "API_KEY": API_KEY, "STREAM_TOKEN_SECRET": "bench-stream-secret-not-real-0123",
            "TWILIO_PHONE_NUMBER": "+15550001111", "TWILIO_API_BASE_URL": twilio.base_url,
            "ALLOWED_DESTINATIONS": "+1", "PUBLIC_URL": API_URL, "MEDIA_STREAM_URL": "wss://media.example.com/stream",
        })  # fmt: skip
        store.put_node_heartbeat(NodeHeartbeat("bench-node", False, True, 0, 10**6, time.time()), 3600)
        app = create_app(settings, store)
        adapter = Mangum(app, lifespan="off")
        validator = RequestValidator(AUTH_TOKEN)
        times: dict[str, list[float]] = {"make_call": [], "make_call_key": [], "status": [], "twilio_rtt": [],
                                         "admission": []}  # fmt: skip
        with httpx.Client() as client:  # the Twilio round trip alone, for reference
            for _ in range(min(n, 50)):
                start = time.perf_counter()
                client.post(f"{twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json",
                            data={"To": "+15551230000", "From": "+15550001111", "Url": API_URL},
                            auth=(ACCOUNT_SID, AUTH_TOKEN))  # fmt: skip
                times["twilio_rtt"].append((time.perf_counter() - start) * 1000)
        for i in range(n + 5):  # the first few warm the app (imports on first use, SQLite cache)
            make = event("make_call_default_stage.json")
            make["headers"]["authorization"] = f"Bearer {API_KEY}"
            make["body"] = json.dumps({"destination_number": f"+1555123{i % 10000:04d}"})
            start = time.perf_counter()
            answer = adapter(make, None)
            made = (time.perf_counter() - start) * 1000
            assert answer["statusCode"] == 201, answer
            keyed = {**make, "headers": {**make["headers"], "idempotency-key": f"bench-{i}"}}
            start = time.perf_counter()
            assert adapter(keyed, None)["statusCode"] == 201
            made_key = (time.perf_counter() - start) * 1000
            call_id = json.loads(answer["body"])["call_id"]
            form = {"CallSid": json.loads(answer["body"])["call_sid"], "CallStatus": "ringing",
                    "SequenceNumber": "1", "Timestamp": "Wed, 25 Nov 2026 02:45:00 +0000"}  # fmt: skip
            status = event("status_default_stage.json")
            status["rawPath"] = status["requestContext"]["http"]["path"] = f"/status/{call_id}"
            status["body"] = urlencode(form)
            status["headers"]["x-twilio-signature"] = validator.compute_signature(f"{API_URL}/status/{call_id}", form)
            start = time.perf_counter()
            answer = adapter(status, None)
            handled = (time.perf_counter() - start) * 1000
            assert answer["statusCode"] == 204, answer
            if i >= 5:
                times["make_call"].append(made)
                times["make_call_key"].append(made_key)
                times["status"].append(handled)
        window = live_window_seconds(settings.max_call_seconds)
        for _ in range(min(n, 200)):  # the two reads /make-call added, alone: heartbeats, then the live-call count
            start, now = time.perf_counter(), time.time()
            store.node_heartbeats(now)
            store.count_live_calls(now - window, now)
            times["admission"].append((time.perf_counter() - start) * 1000)
    return times


def on_dynamodb_local(measure: Callable[[CallStore], T]) -> T | str:
    """`measure` run on a store in a real DynamoDB Local (the Lambda's store), or why it could not run."""
    problem = dynamodb_local.missing()
    if problem:
        return f"DynamoDB Local needs {problem}"
    for name, value in (("AWS_ACCESS_KEY_ID", "benchKeyNotReal"), ("AWS_SECRET_ACCESS_KEY", "benchSecretNotReal")):
        os.environ.setdefault(name, value)
    endpoint, proc = dynamodb_local.start()
    try:
        store = DynamoCallStore.from_table_name("bench-calls", endpoint_url=endpoint, region="us-east-1")
        store.create_table()
        return measure(store)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def dynamodb_local_times(n: int) -> dict[str, list[float]] | str:
    """The same loop on a real DynamoDB Local, or why it could not run."""
    return on_dynamodb_local(lambda store: warm(n, store))


def p50_p99(values: list[float]) -> str:
    return f"{np.percentile(values, 50):.2f} / {np.percentile(values, 99):.2f}"


def run(quick: bool = False) -> list[dict[str, Any]]:
    handler_ms, bare_ms = cold_import_ms(3 if quick else 7)
    with tempfile.TemporaryDirectory() as tmp:
        times = warm(100 if quick else 500, SqliteCallStore(f"{tmp}/calls.db"))
    dynamo = dynamodb_local_times(50 if quick else 200)
    return [
        {"figure": "control: cold `import lambda_api.handler` (fresh interpreter, minus bare start)", "unit": "ms",
         "ours": handler_ms - bare_ms, "note": f"bare interpreter start {bare_ms:.0f} ms"},
        {"figure": "control: warm POST /make-call through Mangum (incl. Twilio loopback)", "unit": "ms p50/p99",
         "ours": p50_p99(times["make_call"])},
        {"figure": "control: the same with an Idempotency-Key", "unit": "ms p50/p99",
         "ours": p50_p99(times["make_call_key"])},
        {"figure": "control: of which the loopback Twilio round trip", "unit": "ms p50/p99",
         "ours": p50_p99(times["twilio_rtt"])},
        {"figure": "control: warm signed status webhook through Mangum", "unit": "ms p50/p99",
         "ours": p50_p99(times["status"])},
        {"figure": "control: of /make-call, the admission reads (heartbeats, live count), SQLite", "unit": "ms p50/p99",
         "ours": p50_p99(times["admission"])},
        *dynamo_rows(dynamo),
    ]  # fmt: skip


def dynamo_rows(times: dict[str, list[float]] | str) -> list[dict[str, Any]]:
    if isinstance(times, str):
        return [{"figure": "control: DynamoDB Local rows not measured", "ours": None, "unit": "", "note": times}]
    return [
        {"figure": "control: warm POST /make-call through Mangum, DynamoDB Local store", "unit": "ms p50/p99",
         "ours": p50_p99(times["make_call"])},
        {"figure": "control: of which the admission reads (heartbeats query + live-count query)", "unit": "ms p50/p99",
         "ours": p50_p99(times["admission"])},
        {"figure": "control: warm signed status webhook through Mangum, DynamoDB Local", "unit": "ms p50/p99",
         "ours": p50_p99(times["status"])},
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
