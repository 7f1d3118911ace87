"""The AWS path of the end-of-call webhook: the control plane queues jobs in SQS, the consumer Lambda delivers them,
backs off through the message's visibility timeout, and dead-letters what cannot be delivered within a day.

moto's SQS (a queue with a redrive policy and its dead-letter queue) and DynamoDB, a loopback receiver that checks
every signature. What the Lambda service does around the handler (receive a batch, delete the messages not
reported as failures, make a message visible again when its timeout ends) the tests do with moto's own calls.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from call_state.agent_actions import CallActions
from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall
from call_state.dynamo_store import DynamoCallStore
from call_state.outbound import OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import WebhookSigner
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_jobs import GIVE_UP_AFTER_S, JobKind, WebhookJob, deliver_job, event_id_for
from call_state.webhook_outbox import SqsOutbox
from lambda_api import webhook_consumer
from lambda_api.webhook_consumer import WebhookConsumer
from tests.control_helpers import ACCOUNT_SID, AUTH, control_api, make_call, signed
from tests.standins.receiver import Receiver
from tests.standins.twilio_rest import TwilioRestStandIn
from tests.test_store_contract import make_record

SECRET = "test-webhook-secret-not-real-0123"


class RecordingSqs:
    """The boto3 SQS client, with the backoffs the consumer set written down (a spy over boto3, not our code)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.visibility: list[int] = []

    def change_message_visibility(self, **kwargs: Any) -> Any:
        self.visibility.append(kwargs["VisibilityTimeout"])
        return self.client.change_message_visibility(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


@dataclass
class Aws:
    sqs: Any
    queue: str
    dlq: str
    queue_arn: str
    store: DynamoCallStore

    def lambda_event(self, count: int = 10) -> dict[str, Any]:
        """What the SQS event source hands the function: the visible messages, with their attributes."""
        got = self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=count, AttributeNames=["All"])
        return {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                             "attributes": m["Attributes"], "eventSource": "aws:sqs",
                             "eventSourceARN": self.queue_arn} for m in got.get("Messages", [])]}  # fmt: skip

    def settle(self, event: dict[str, Any], answer: dict[str, Any]) -> None:
        """Lambda deletes every message of the batch that was not reported as a failure."""
        failed = {f["itemIdentifier"] for f in answer["batchItemFailures"]}
        for record in event["Records"]:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=record["receiptHandle"])

    def dead_letters(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(QueueUrl=self.dlq, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        return list(got.get("Messages", []))


@pytest.fixture
def aws() -> Iterator[Aws]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name="us-east-1")
        dlq = sqs.create_queue(QueueName="webhooks-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "100"})
        queue = sqs.create_queue(QueueName="webhooks", Attributes={"RedrivePolicy": redrive})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        store = DynamoCallStore.from_table_name("calls", region="us-east-1")
        store.create_table()
        yield Aws(sqs, queue, dlq, arn, store)


@dataclass
class Path:
    aws: Aws
    api: Any
    receiver: Receiver
    sqs: RecordingSqs
    consumer: WebhookConsumer


@pytest.fixture
async def path(aws: Aws, twilio: TwilioRestStandIn) -> AsyncIterator[Path]:
    store = AsyncCallStore(aws.store)
    end_of_call = EndOfCall(store, SqsOutbox(aws.queue, aws.sqs))
    client = OutboundClient(WebhookSigner(SECRET.encode()), OutboundPolicy(frozenset({"127.0.0.1"})))
    spy = RecordingSqs(aws.sqs)
    consumer = WebhookConsumer(WebhookDelivery(store, client), spy, aws.queue, aws.dlq)
    with Receiver(SECRET.encode()) as receiver:
        async with control_api(twilio, aws.store, end_of_call=end_of_call, webhook_secret=SECRET,
                               webhook_allowed_hosts=frozenset({"127.0.0.1"})) as api:  # fmt: skip
            yield Path(aws, api, receiver, spy, consumer)


async def ended_call(p: Path) -> str:
    body = {"destination_number": "+15551230000", "webhook_url": p.receiver.url("/events")}
    r = await make_call(p.api, body)
    call_id, call_sid = r.json()["call_id"], r.json()["call_sid"]
    route = f"/status/{call_id}"
    form = {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, "CallStatus": "busy"}
    assert (await p.api.post(route, **signed(route, form))).status_code == 204
    return str(call_id)


async def webhook_of(p: Path, call_id: str) -> dict[str, Any]:
    state: dict[str, Any] = (await p.api.get(f"/calls/{call_id}", headers=AUTH)).json()["webhook"]
    return state


async def test_queued_in_sqs_and_delivered_by_the_consumer(path: Path) -> None:
    call_id = await ended_call(path)
    event = path.aws.lambda_event()
    (message,) = event["Records"]  # the deadline job waits in the queue with DelaySeconds, invisible for now
    assert WebhookJob.from_json(message["body"]).kind is JobKind.DELIVER
    answer = await path.consumer.consume(event)
    assert answer == {"batchItemFailures": []}
    path.aws.settle(event, answer)
    (sent,) = path.receiver.received
    assert sent.signature_ok and sent.json["event_id"] == event_id_for(call_id)
    assert sent.json["call"]["status"] == "busy"
    assert (await webhook_of(path, call_id))["state"] == "delivered"
    assert path.aws.lambda_event()["Records"] == []


async def test_a_500_backs_off_through_the_visibility_timeout_then_delivers_once(path: Path) -> None:
    path.receiver.reply("/events", status=500)
    call_id = await ended_call(path)
    event = path.aws.lambda_event()
    answer = await path.consumer.consume(event)
    (message,) = event["Records"]
    assert answer == {"batchItemFailures": [{"itemIdentifier": message["messageId"]}]}
    path.aws.settle(event, answer)
    assert path.sqs.visibility == [10]  # SQS holds it until the first retry is due
    assert path.aws.lambda_event()["Records"] == []  # hidden meanwhile
    state = await webhook_of(path, call_id)
    assert state["state"] == "retrying" and state["attempts"] == 1
    path.aws.sqs.change_message_visibility(QueueUrl=path.aws.queue, ReceiptHandle=message["receiptHandle"],
                                           VisibilityTimeout=0)  # fmt: skip  # the 10 s pass
    path.receiver.reply("/events", status=200)
    again = path.aws.lambda_event()
    assert again["Records"][0]["attributes"]["ApproximateReceiveCount"] == "2"
    answer = await path.consumer.consume(again)
    assert answer == {"batchItemFailures": []}
    path.aws.settle(again, answer)
    assert (await webhook_of(path, call_id))["attempts"] == 2
    assert [r.json["event_id"] for r in path.receiver.received] == [event_id_for(call_id)] * 2
    assert path.aws.lambda_event()["Records"] == [] and path.aws.dead_letters() == []


async def test_after_a_day_the_job_goes_to_the_dead_letter_queue(path: Path) -> None:
    path.receiver.reply("/events", status=503)
    call_id = await ended_call(path)
    path.aws.settle(path.aws.lambda_event(), {"batchItemFailures": []})  # drop the fresh job: an old one instead
    old = deliver_job(call_id, time.time() - GIVE_UP_AFTER_S - 60)
    path.aws.sqs.send_message(QueueUrl=path.aws.queue, MessageBody=old.to_json())
    event = path.aws.lambda_event()
    answer = await path.consumer.consume(event)
    assert answer == {"batchItemFailures": []}  # finished with: Lambda deletes it from the queue
    path.aws.settle(event, answer)
    (dead,) = path.aws.dead_letters()
    assert WebhookJob.from_json(dead["Body"]) == old
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "no 2xx answer within 24 h"
    assert (await webhook_of(path, call_id))["state"] == "failed"
    path.receiver.reply("/events", status=200)  # fixed: the operator moves the dead letters back (the redrive)
    path.aws.sqs.send_message(QueueUrl=path.aws.queue, MessageBody=dead["Body"])
    event = path.aws.lambda_event()
    assert await path.consumer.consume(event) == {"batchItemFailures": []}
    state = await webhook_of(path, call_id)
    assert state["state"] == "delivered" and state["attempts"] == 2 and path.receiver.deliveries() == 2


async def test_messages_that_are_not_jobs_are_dead_lettered(path: Path) -> None:
    for body in ("not json", '{"call_id": "c_1"}', json.dumps({"call_id": "x" * 500, "kind": "deliver",
                                                               "first_due_at": 1})):  # fmt: skip
        path.aws.sqs.send_message(QueueUrl=path.aws.queue, MessageBody=body)
    event = path.aws.lambda_event()
    hostile = {"Records": [*event["Records"], "not a record", {"messageId": "m-1"}]}
    answer = await path.consumer.consume(hostile)
    assert answer["batchItemFailures"] == []
    assert len(path.aws.dead_letters()) == 4 and path.receiver.deliveries() == 0
    assert await path.consumer.consume({"Records": "nope"}) == {"batchItemFailures": []}
    assert await path.consumer.consume(None) == {"batchItemFailures": []}


async def test_a_job_for_a_call_that_is_gone_is_dropped(path: Path) -> None:
    path.aws.sqs.send_message(QueueUrl=path.aws.queue, MessageBody=deliver_job("c_gone", time.time()).to_json())
    event = path.aws.lambda_event()
    assert await path.consumer.consume(event) == {"batchItemFailures": []}
    assert path.receiver.deliveries() == 0 and path.aws.dead_letters() == []


def test_the_handler_builds_from_the_environment(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
        Name="voice/webhook", SecretString=SECRET)["ARN"]  # fmt: skip
    base = {"CALL_STORE": "dynamodb://calls", "AWS_REGION": "us-east-1", "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    for key in ("WEBHOOK_SECRET", "WEBHOOK_QUEUE_URL", "WEBHOOK_DLQ_URL", "PUBLIC_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in base.items():
        monkeypatch.setenv(key, value)
    webhook_consumer.reset()
    with pytest.raises(RuntimeError, match="WEBHOOK_QUEUE_URL, WEBHOOK_DLQ_URL, WEBHOOK_SECRET"):
        webhook_consumer.handler({"Records": []}, None)
    monkeypatch.setenv("WEBHOOK_QUEUE_URL", aws.queue)
    monkeypatch.setenv("WEBHOOK_DLQ_URL", aws.dlq)
    monkeypatch.setenv("WEBHOOK_SECRET_SECRET_ARN", secret_arn)
    with Receiver(SECRET.encode()) as receiver:
        now = time.time()  # a call that ended without a stream, its webhook queued by the control plane
        call = make_record("c_handler", created_at=now).with_changes(
            actions=CallActions(webhook_url=receiver.url("/events")))  # fmt: skip
        aws.store.create_call(call)
        asyncio.run(SqsOutbox(aws.queue, aws.sqs).enqueue(deliver_job("c_handler", now)))
        event = aws.lambda_event()
        try:
            assert webhook_consumer.handler(event, None) == {"batchItemFailures": []}
            assert webhook_consumer.handler(aws.lambda_event(), None) == {"batchItemFailures": []}  # warm
        finally:
            webhook_consumer.reset()
        (sent,) = receiver.received
    assert sent.signature_ok and sent.json["call"]["call_id"] == "c_handler"
