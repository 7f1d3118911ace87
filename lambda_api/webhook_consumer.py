"""AWS Lambda entry point of the end-of-call webhook consumer: SQS event source with ReportBatchItemFailures.

Each message is one webhook job (call_state/webhook_jobs.py), attempted by the same `WebhookDelivery` as the
all-in-one worker. A message whose job is finished (delivered, or nothing to send) is deleted by Lambda; one that
must be tried again is reported as a batch item failure after its visibility timeout was set to the backoff
(`ChangeMessageVisibility`: 10 s, 1 min, 5 min, ... 2 h), so SQS itself holds it until it is due. After 24 h of
failures the job is given up: the record says `failed` and the message is moved to the dead-letter queue (so is a
message that is not a job at all). The queue's redrive policy (`maxReceiveCount`, infra/webhook_queue.py) is the
last guard, well above the ~20 receives the schedule takes.

Settings, the store, the signed client and the SQS client are built once per container, on the first invocation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from typing import Any

from call_state.async_store import AsyncCallStore
from call_state.ids import CALL_ID, loggable
from call_state.outbound import outbound_client
from call_state.secrets import resolve_secret_arns
from call_state.settings import Settings
from call_state.store import open_store
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_jobs import WebhookJob
from call_state.webhook_outbox import sqs_client

log = logging.getLogger("lambda_api.webhook_consumer")
logging.getLogger().setLevel(logging.INFO)
MAX_VISIBILITY_S = 12 * 3600  # SQS's limit


class WebhookConsumer:
    def __init__(self, delivery: WebhookDelivery, sqs: Any, queue_url: str, dlq_url: str) -> None:
        self._delivery = delivery
        self._sqs = sqs
        self._queue_url = queue_url
        self._dlq_url = dlq_url

    async def consume(self, event: object) -> dict[str, list[dict[str, str]]]:
        """The batch's messages attempted concurrently; the ones to receive again, for Lambda to leave queued."""
        records = event.get("Records") if isinstance(event, dict) else None
        messages = [m for m in records if isinstance(m, dict)] if isinstance(records, list) else []
        retry = await asyncio.gather(*(self._one(m) for m in messages))
        return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in retry if message_id]}

    async def _one(self, message: dict[str, Any]) -> str | None:
        """None when the message is done with, else its id (it comes back when its visibility timeout ends)."""
        message_id = str(message.get("messageId", ""))[:100]
        try:
            job = WebhookJob.from_json(message.get("body"))
        except ValueError as exc:
            log.error("message %r is not a webhook job (%s): moved to the dead-letter queue", message_id, exc)
            return await self._dead_letter(message, message_id, "not a webhook job")
        try:
            result = await self._delivery.attempt(job)
        except Exception as exc:  # the store is failing: the message returns after the queue's visibility timeout
            log.warning("call %s: webhook job not attempted (%s): retried later", loggable(job.call_id, CALL_ID),
                        type(exc).__name__)  # fmt: skip
            return message_id
        if result.gave_up:
            return await self._dead_letter(message, message_id, "no 2xx answer within 24 h")
        if result.done:
            return None
        delay = min(MAX_VISIBILITY_S, max(0, math.ceil(result.retry_in)))
        receipt = str(message.get("receiptHandle", ""))
        try:
            await asyncio.to_thread(self._sqs.change_message_visibility, QueueUrl=self._queue_url,
                                    ReceiptHandle=receipt, VisibilityTimeout=delay)  # fmt: skip
        except Exception as exc:  # it still comes back, after the queue's default visibility timeout
            log.warning("call %s: backoff not set (%s)", loggable(job.call_id, CALL_ID), type(exc).__name__)
        return message_id

    async def _dead_letter(self, message: dict[str, Any], message_id: str, why: str) -> str | None:
        body = message.get("body")
        text = body[:200_000] if isinstance(body, str) and body else "(empty)"
        reason = {"reason": {"DataType": "String", "StringValue": why}}
        try:
            await asyncio.to_thread(self._sqs.send_message, QueueUrl=self._dlq_url, MessageBody=text,
                                    MessageAttributes=reason)  # fmt: skip
        except Exception as exc:  # keep it in the queue rather than lose it
            log.error("message %r not moved to the dead-letter queue (%s)", message_id, type(exc).__name__)
            return message_id
        return None


def build(environ: dict[str, str] | None = None) -> WebhookConsumer:
    """The consumer of this container, from the environment (secrets as ARNs)."""
    settings = Settings.from_env(resolve_secret_arns(dict(os.environ) if environ is None else environ))
    needed = {"WEBHOOK_QUEUE_URL": settings.webhook_queue_url, "WEBHOOK_DLQ_URL": settings.webhook_dlq_url,
              "WEBHOOK_SECRET": settings.webhook_secret}  # fmt: skip
    missing = [name for name, value in needed.items() if not value]
    if missing:
        raise RuntimeError(f"the webhook consumer needs {', '.join(missing)}")
    store = open_store(settings.call_store, dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                       region=settings.aws_region)  # fmt: skip
    delivery = WebhookDelivery(AsyncCallStore(store), outbound_client(settings))
    return WebhookConsumer(delivery, sqs_client(settings.webhook_queue_url), settings.webhook_queue_url,
                           settings.webhook_dlq_url)  # fmt: skip


_consumer: WebhookConsumer | None = None


def handler(event: dict[str, Any], context: Any) -> dict[str, list[dict[str, str]]]:
    global _consumer
    if _consumer is None:
        _consumer = build()
    return asyncio.run(_consumer.consume(event))


def reset() -> None:
    """Forget the built consumer (tests change the environment between cases)."""
    global _consumer
    _consumer = None
