"""Where end-of-call webhook jobs wait until they are due: one small interface, two places.

- `StoreOutbox`: the call store's own table (SQLite, or DynamoDB items), drained by `OutboxWorker`
  (call_state/webhook_worker.py) in the all-in-one server. It survives a restart because it is the store.
- `SqsOutbox`: an SQS queue with a dead-letter queue (infra/webhook_queue.py), drained by the consumer Lambda
  (lambda_api/webhook_consumer.py). Used wherever `WEBHOOK_QUEUE_URL` is set: the control Lambda and the media
  nodes on AWS. A job due later is sent with `DelaySeconds` (at most 15 minutes; the deadline job needs 2).

`outbox_for(settings, store)` picks one. Whoever queues a job does not care which it is (call_state/call_end.py).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from call_state.async_store import AsyncCallStore
from call_state.settings import SQS_URL, Settings
from call_state.webhook_jobs import GIVE_UP_AFTER_S, WebhookJob

MAX_SQS_DELAY_S = 900
JOB_KEPT_S = int(GIVE_UP_AFTER_S) + 7 * 86400  # a job row outlives its retries (then the store's TTL takes it)


class WebhookOutbox(Protocol):
    async def enqueue(self, job: WebhookJob) -> None:
        """Keep `job` until it is due (`job.first_due_at`) and then hand it to a delivery worker. Raise if it
        could not be kept (the caller retries)."""


class StoreOutbox:
    def __init__(self, store: AsyncCallStore, on_enqueued: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_enqueued = on_enqueued  # the worker of this process (`OutboxWorker.wake`): it looks at once

    async def enqueue(self, job: WebhookJob) -> None:
        await self._store.add_webhook_job(job, int(job.first_due_at) + JOB_KEPT_S)
        if self._on_enqueued is not None:
            self._on_enqueued()


def sqs_client(queue_url: str) -> Any:
    """A boto3 SQS client in the queue's region (the region is part of the URL)."""
    import boto3  # lazy: the all-in-one server never needs it

    match = SQS_URL.match(queue_url)
    return boto3.client("sqs", region_name=match.group(1) if match else None)


class SqsOutbox:
    def __init__(self, queue_url: str, client: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.queue_url = queue_url
        self._client = client  # made on first use: creating one takes tens of milliseconds (then thread-safe)
        self._clock = clock

    async def enqueue(self, job: WebhookJob) -> None:
        if self._client is None:
            self._client = await asyncio.to_thread(sqs_client, self.queue_url)
        delay = min(MAX_SQS_DELAY_S, max(0, math.ceil(job.first_due_at - self._clock())))
        await asyncio.to_thread(
            self._client.send_message, QueueUrl=self.queue_url, MessageBody=job.to_json(), DelaySeconds=delay
        )


def outbox_for(settings: Settings, store: AsyncCallStore) -> WebhookOutbox:
    """SQS when `WEBHOOK_QUEUE_URL` is set (AWS), else the store (the all-in-one server)."""
    if settings.webhook_queue_url:
        return SqsOutbox(settings.webhook_queue_url)
    return StoreOutbox(store)
