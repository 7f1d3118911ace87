"""The Lambda handler (Mangum) driven with API Gateway HTTP API v2 events: routing, stages, signature URLs.

The store is DynamoDB (moto, and real DynamoDB Local), Secrets Manager is moto, Twilio is the loopback stand-in.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import boto3
import pytest
from moto import mock_aws
from twilio.request_validator import RequestValidator

from call_state.dynamo_store import DynamoCallStore
from call_state.nodes import NodeHeartbeat
from call_state.record import Recording
from call_state.webhook_jobs import JobKind, WebhookJob
from lambda_api import handler as lambda_handler
from lambda_api.recordings import LAMBDA_MAX_BYTES
from tests.standins.twilio_rest import TwilioRestStandIn

FIXTURES = Path(__file__).parent / "fixtures" / "apigw"
ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "test-auth-token-not-real"
API_KEY = "test-api-key-not-real-0123456789"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return event


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[TwilioRestStandIn]:
    """A Lambda-like environment: secrets only as ARNs, DynamoDB store, API Gateway URL unknown."""
    with mock_aws(), TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        app_secret = sm.create_secret(
            Name="voice/app",
            SecretString=json.dumps({"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                                     "GEMINI_API_KEY": "test-gemini-not-real"}),
        )["ARN"]  # fmt: skip
        api_secret = sm.create_secret(Name="voice/api-key", SecretString=API_KEY)["ARN"]
        token_secret = sm.create_secret(Name="voice/stream", SecretString="test-stream-secret-not-real-0123")["ARN"]
        table = DynamoCallStore.from_table_name("calls", region="us-east-1")
        table.create_table()
        table.put_node_heartbeat(NodeHeartbeat("node-a", False, True, 0, 100, time.time()), 3600)  # a live node
        env = {
            "TWILIO_ACCOUNT_SID_SECRET_ARN": app_secret,
            "TWILIO_AUTH_TOKEN_SECRET_ARN": app_secret,
            "GEMINI_API_KEY_SECRET_ARN": app_secret,
            "API_KEY_SECRET_ARN": api_secret,
            "STREAM_TOKEN_SECRET_SECRET_ARN": token_secret,
            "TWILIO_PHONE_NUMBER": "+15550001111",
            "TWILIO_API_BASE_URL": twilio.base_url,
            "CALL_STORE": "dynamodb://calls",
            "AWS_REGION": "us-east-1",
            "ALLOWED_DESTINATIONS": "+1",
            "MEDIA_STREAM_URL": "wss://media.example.com/stream",
        }
        for key in (
            "PUBLIC_URL",
            "API_KEY",
            "TWILIO_AUTH_TOKEN",
            "STREAM_TOKEN_SECRET",
            "API_BASE_PATH",
            "WEBHOOK_SECRET",
            "WEBHOOK_QUEUE_URL",
            "WEBHOOK_ALLOWED_HOSTS",
        ):
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        lambda_handler.reset()
        yield twilio
        lambda_handler.reset()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    return lambda_handler.handler(event, None)


def make_call(destination: str = "+15551230000") -> dict[str, Any]:
    event = load("make_call_default_stage.json")
    event["headers"]["authorization"] = f"Bearer {API_KEY}"
    event["body"] = json.dumps({"destination_number": destination})
    return invoke(event)


def status_event(fixture: str, call_id: str, form: dict[str, str], signed_url: str) -> dict[str, Any]:
    event = load(fixture)
    event["rawPath"] = event["rawPath"].replace("CALL_ID", call_id)
    event["requestContext"]["http"]["path"] = event["rawPath"]
    body = urlencode(form)
    event["body"] = base64.b64encode(body.encode()).decode() if event["isBase64Encoded"] else body
    event["headers"]["x-twilio-signature"] = RequestValidator(AUTH_TOKEN).compute_signature(signed_url, form)
    return event


def test_healthz_and_secrets_from_secrets_manager(lambda_env: TwilioRestStandIn) -> None:
    r = invoke(load("healthz_default_stage.json"))
    assert r["statusCode"] == 200
    body = json.loads(r["body"])
    assert body["status"] == "ok"  # every secret came from its ARN (else: not_configured)
    assert (body["media_plane"], body["media_nodes"], body["capacity"]) == ("ok", 1, 100)


def test_no_media_node_means_503_and_no_dial(lambda_env: TwilioRestStandIn) -> None:
    store = DynamoCallStore.from_table_name("calls", region="us-east-1")
    store.put_node_heartbeat(NodeHeartbeat("node-a", True, True, 0, 100, time.time()), 3600)  # draining
    r = make_call()
    assert r["statusCode"] == 503 and json.loads(r["body"])["error"]["code"] == "draining"
    assert r["headers"]["retry-after"] == "30" and lambda_env.dials == 0
    health = invoke(load("healthz_default_stage.json"))
    assert health["statusCode"] == 200 and json.loads(health["body"])["status"] == "draining"  # it can serve


def test_make_call_through_mangum_stores_in_dynamodb(lambda_env: TwilioRestStandIn) -> None:
    r = make_call()
    assert r["statusCode"] == 201, r["body"]
    call_id = json.loads(r["body"])["call_id"]
    store = DynamoCallStore.from_table_name("calls", region="us-east-1")
    record = store.get_call(call_id, time.time())
    assert record is not None and record.status.value == "queued"
    # With no PUBLIC_URL, webhook URLs come from the API Gateway domain of the request.
    form = lambda_env.created[0]
    assert form["StatusCallback"] == [f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/status/{call_id}"]
    assert form["Url"] == [f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/twiml/{call_id}"]


def test_signature_checked_against_the_event_url_default_stage(lambda_env: TwilioRestStandIn) -> None:
    call_id = json.loads(make_call()["body"])["call_id"]
    form = {"CallSid": "CA" + "8" * 32, "CallStatus": "ringing", "SequenceNumber": "1"}
    url = f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/status/{call_id}"
    assert invoke(status_event("status_default_stage.json", call_id, form, url))["statusCode"] == 204
    wrong = status_event("status_default_stage.json", call_id, form, "https://attacker.example.com/status/x")
    assert invoke(wrong)["statusCode"] == 403


def test_named_stage_with_base64_body(lambda_env: TwilioRestStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_BASE_PATH", "/prod")
    lambda_handler.reset()
    call_id = json.loads(make_call_with_stage()["body"])["call_id"]
    stage_url = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod"
    assert lambda_env.created[0]["StatusCallback"] == [f"{stage_url}/status/{call_id}"]
    form = {"CallSid": "CA" + "8" * 32, "CallStatus": "in-progress", "SequenceNumber": "2"}
    url = f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/prod/status/{call_id}"
    assert invoke(status_event("status_named_stage_base64.json", call_id, form, url))["statusCode"] == 204
    no_stage = status_event("status_named_stage_base64.json", call_id, form, url.replace("/prod", ""))
    assert invoke(no_stage)["statusCode"] == 403


def make_call_with_stage() -> dict[str, Any]:
    event = load("make_call_default_stage.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/prod/make-call"
    event["requestContext"]["stage"] = "prod"
    event["headers"]["authorization"] = f"Bearer {API_KEY}"
    event["body"] = json.dumps({"destination_number": "+15551230000"})
    return invoke(event)


def test_custom_domain_with_public_url_and_query(
    lambda_env: TwilioRestStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PUBLIC_URL", "https://voice.example.com")
    lambda_handler.reset()
    call_id = json.loads(make_call()["body"])["call_id"]
    assert lambda_env.created[0]["Url"] == [f"https://voice.example.com/twiml/{call_id}"]
    form = {"CallSid": "CA" + "8" * 32, "CallStatus": "completed", "SequenceNumber": "3"}
    url = f"https://voice.example.com/status/{call_id}?source=twilio"
    assert invoke(status_event("status_custom_domain_query.json", call_id, form, url))["statusCode"] == 204
    without_query = status_event("status_custom_domain_query.json", call_id, form, url.split("?")[0])
    assert invoke(without_query)["statusCode"] == 403


def test_unknown_route_and_bad_auth_are_json_errors(lambda_env: TwilioRestStandIn) -> None:
    event = load("healthz_default_stage.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/nope"
    r = invoke(event)
    assert r["statusCode"] == 404 and json.loads(r["body"])["error"]["code"] == "not_found"
    event = load("make_call_default_stage.json")
    event["body"] = json.dumps({"destination_number": "+15551230000"})
    r = invoke(event)
    assert r["statusCode"] == 401 and lambda_env.dials == 0


def test_bad_configuration_fails_with_one_line(lambda_env: TwilioRestStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBLIC_URL", "ftp://nope")
    lambda_handler.reset()
    with pytest.raises(ValueError, match="PUBLIC_URL must start with https://"):
        invoke(load("healthz_default_stage.json"))


def get_event(path: str, query: str = "") -> dict[str, Any]:
    event = load("healthz_default_stage.json")
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = query
    event["headers"]["authorization"] = f"Bearer {API_KEY}"
    return event


def test_the_recording_through_mangum_is_base64_and_bounded(lambda_env: TwilioRestStandIn) -> None:
    call_id = json.loads(make_call()["body"])["call_id"]
    store = DynamoCallStore.from_table_name("calls", region="us-east-1")
    small, large = "RE" + "1" * 32, "RE" + "2" * 32
    lambda_env.recordings[small] = b"ID3" + bytes(range(256)) * 1000
    lambda_env.recordings[large] = b"RIFF" + b"\x00" * LAMBDA_MAX_BYTES  # an hour of WAV does not fit Lambda
    store.update_call(call_id, time.time(), recording=Recording(small, "https://api.twilio.com/x", 60.0))
    r = invoke(get_event(f"/calls/{call_id}/recording", "format=mp3"))
    assert r["statusCode"] == 200 and r["isBase64Encoded"] is True
    assert r["headers"]["content-type"] == "audio/mpeg"
    assert base64.b64decode(r["body"]) == lambda_env.recordings[small]
    store.update_call(call_id, time.time(), recording=Recording(large, "https://api.twilio.com/x", 3600.0))
    too_large = invoke(get_event(f"/calls/{call_id}/recording"))
    assert too_large["statusCode"] == 502
    assert json.loads(too_large["body"])["error"]["code"] == "recording_too_large"


def test_the_end_of_call_webhook_is_queued_in_sqs(
    lambda_env: TwilioRestStandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqs = boto3.client("sqs", region_name="us-east-1")
    queue = sqs.create_queue(QueueName="webhooks")["QueueUrl"]
    secret = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="voice/webhook", SecretString="test-webhook-secret-not-real-0123")["ARN"]  # fmt: skip
    monkeypatch.setenv("WEBHOOK_QUEUE_URL", queue)
    monkeypatch.setenv("WEBHOOK_SECRET_SECRET_ARN", secret)
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1")
    lambda_handler.reset()
    event = load("make_call_default_stage.json")
    event["headers"]["authorization"] = f"Bearer {API_KEY}"
    event["body"] = json.dumps({"destination_number": "+15551230000", "webhook_url": "http://127.0.0.1:9/events"})
    placed = invoke(event)
    assert placed["statusCode"] == 201, placed["body"]
    call_id = json.loads(placed["body"])["call_id"]
    form = {"CallSid": "CA" + "8" * 32, "CallStatus": "busy", "SequenceNumber": "3"}
    url = f"https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com/status/{call_id}"
    assert invoke(status_event("status_default_stage.json", call_id, form, url))["statusCode"] == 204
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    (job,) = [WebhookJob.from_json(m["Body"]) for m in messages]  # the deadline job is delayed: not visible yet
    assert job.call_id == call_id and job.kind is JobKind.DELIVER
