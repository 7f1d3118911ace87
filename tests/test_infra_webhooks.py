"""The CDK app's end-of-call webhook resources: the queue and its dead-letter queue, the consumer Lambda and its
event source, and who may send to the queue (the control Lambda and the media nodes, single node and fleet).

Synthesized once per module with bundling skipped (test_infra_stack.py does cdk-nag and cfn-lint on the same app;
test_infra_synth.py the real `cdk synth`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import aws_cdk as cdk
from aws_cdk.assertions import Match, Template

from call_state.webhook_jobs import GIVE_UP_AFTER_S, RECORDING_WAIT_S, RETRY_DELAYS_S, WAIT_POLL_S
from infra.nag import add_checks
from infra.stack import VoiceAgentStack
from infra.webhook_queue import CONSUMER_TIMEOUT_S, MAX_RECEIVES
from tests.test_infra_stack import CONTEXT


def synth(**context: str) -> dict[str, Any]:
    app = cdk.App(context={**CONTEXT, **context})
    stack = VoiceAgentStack(app, "Webhooks")
    add_checks(app, stack)
    app.synth()  # raises on a cdk-nag finding that is not acknowledged
    return Template.from_stack(stack).to_json()


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    return synth()


def of_type(raw: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in raw["Resources"].items() if v["Type"] == kind}


def queues(raw: dict[str, Any]) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    found = of_type(raw, "AWS::SQS::Queue")
    (main,) = [(k, v) for k, v in found.items() if "RedrivePolicy" in v["Properties"]]
    (dead,) = [(k, v) for k, v in found.items() if "RedrivePolicy" not in v["Properties"]]
    return main, dead


def test_the_queue_its_dead_letters_and_a_day_of_retries(single: dict[str, Any]) -> None:
    (main_id, main), (dead_id, dead) = queues(single)
    props = main["Properties"]
    assert props["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dead_id, "Arn"]},
                                      "maxReceiveCount": MAX_RECEIVES}  # fmt: skip
    retries_a_day = 1
    elapsed = 0.0
    while elapsed < GIVE_UP_AFTER_S:
        elapsed += RETRY_DELAYS_S[min(retries_a_day, len(RETRY_DELAYS_S)) - 1]
        retries_a_day += 1
    waits = int(RECORDING_WAIT_S / WAIT_POLL_S)
    assert MAX_RECEIVES >= 3 * (retries_a_day + waits)  # the redrive never cuts the day of retries short
    assert props["MessageRetentionPeriod"] >= GIVE_UP_AFTER_S + 86400  # a message outlives its retries
    assert props["VisibilityTimeout"] >= 6 * CONSUMER_TIMEOUT_S
    assert dead["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    for queue in (main, dead):
        assert queue["Properties"]["SqsManagedSseEnabled"] is True
    policies = json.dumps(of_type(single, "AWS::SQS::QueuePolicy"))
    assert '"aws:SecureTransport": "false"' in policies and main_id in policies and dead_id in policies


def test_the_consumer_and_its_event_source(single: dict[str, Any]) -> None:
    template = Template.from_json(single)
    template.has_resource_properties("AWS::Lambda::Function", {
        "Runtime": "python3.12", "Handler": "lambda_api.webhook_consumer.handler", "Timeout": CONSUMER_TIMEOUT_S,
        "Environment": {"Variables": {"CALL_STORE": Match.any_value(), "WEBHOOK_QUEUE_URL": Match.any_value(),
                                      "WEBHOOK_DLQ_URL": Match.any_value(),
                                      "WEBHOOK_SECRET_SECRET_ARN": Match.any_value()}},
    })  # fmt: skip
    (main_id, _), _ = queues(single)
    template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "EventSourceArn": {"Fn::GetAtt": [main_id, "Arn"]}, "BatchSize": 10,
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
    })  # fmt: skip
    functions = of_type(single, "AWS::Lambda::Function")
    (consumer,) = [
        f for f in functions.values() if f["Properties"].get("Handler", "").endswith("webhook_consumer.handler")
    ]
    (control,) = [f for f in functions.values() if f["Properties"].get("Handler") == "lambda_api.handler.handler"]
    assert consumer["Properties"]["Code"] == control["Properties"]["Code"]  # one bundle, two handlers
    env = consumer["Properties"]["Environment"]["Variables"]
    assert not {"API_KEY_SECRET_ARN", "TWILIO_AUTH_TOKEN_SECRET_ARN", "WEBHOOK_SECRET"} & set(env)


def statements_of(raw: dict[str, Any], role_hint: str) -> list[dict[str, Any]]:
    found = []
    for policy in of_type(raw, "AWS::IAM::Policy").values():
        roles = json.dumps(policy["Properties"].get("Roles", []))
        if role_hint in roles:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def actions(statements: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        found |= {value} if isinstance(value, str) else set(value)
    return found


@pytest.mark.parametrize("mode", ["single", "fleet"])
def test_who_may_queue_and_who_consumes(mode: str, single: dict[str, Any]) -> None:
    raw = single if mode == "single" else synth(mediaNodes="2")
    control_role = next(k for k in of_type(raw, "AWS::IAM::Role") if k.startswith("ControlApiFunction"))
    consumer_role = next(k for k in of_type(raw, "AWS::IAM::Role") if k.startswith("WebhooksConsumer"))
    media_role = next(k for k in of_type(raw, "AWS::IAM::Role") if k.startswith(("MediaNodeRole", "MediaFleetRole")))
    assert "sqs:SendMessage" in actions(statements_of(raw, control_role))
    assert "sqs:SendMessage" in actions(statements_of(raw, media_role))
    consumer = actions(statements_of(raw, consumer_role))
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:SendMessage"} <= consumer
    assert not any(a.endswith("*") and a.startswith("sqs:") for a in consumer)
    control_fn = next(v for v in of_type(raw, "AWS::Lambda::Function").values()
                      if v["Properties"].get("Handler") == "lambda_api.handler.handler")  # fmt: skip
    assert "WEBHOOK_QUEUE_URL" in control_fn["Properties"]["Environment"]["Variables"]
    assert "WEBHOOK_QUEUE_URL=" in json.dumps(raw)  # the media node's install command carries it
    assert "WebhookSecretArn" in raw["Outputs"] and "WebhookDeadLetterQueueUrl" in raw["Outputs"]


@pytest.mark.parametrize("mode", ["single", "fleet"])
def test_the_media_nodes_accept_the_consoles_origin(mode: str, single: dict[str, Any]) -> None:
    """The console is served by the API (API Gateway's own URL): Talk opens /browser-stream on the media nodes."""
    raw = single if mode == "single" else synth(mediaNodes="2")
    text = json.dumps(raw)
    assert "CONSOLE_ORIGINS=" in text
    start = text.index("CONSOLE_ORIGINS=")
    assert "execute-api" in text[start : start + 400] or "HttpApi" in text[start : start + 400]
    custom = synth(publicUrl="https://api.example.com")
    assert "CONSOLE_ORIGINS=https://api.example.com" in json.dumps(custom)
