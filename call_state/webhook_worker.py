"""`OutboxWorker`: delivers the store outbox's due webhook jobs, in the all-in-one server (`all_in_one.py` runs it in
the server's lifespan, beside the media node's store writer).

It claims up to `BATCH` due jobs (each under a lease, so the two colours of a blue/green upgrade sharing one
SQLite file never attempt a job twice at once), attempts them concurrently, then removes the finished ones and sets
the next due time of the others. The outbox is the store, so a restart loses nothing: jobs still due are claimed
by the next process; a job whose attempt was cut short (the process died mid-request) is claimed again once its
lease ends. It looks at once when this process queued a job (`wake()`, wired to the control API's outbox), and
otherwise every `POLL_S`: due times (retries an hour out) and other processes (the other colour, a media node's
own outbox object) add jobs too, and one indexed query a second costs nothing measurable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from call_state.async_store import AsyncCallStore
from call_state.outage import OutageLog
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_jobs import TIMEOUT_S, WebhookJob

log = logging.getLogger(__name__)

POLL_S = 1.0
BATCH = 16  # attempts at once (each waits at most TIMEOUT_S for a receiver)
LEASE_S = 4 * TIMEOUT_S + 20  # an attempt and its store writes end well inside it


class OutboxWorker:
    def __init__(
        self,
        store: AsyncCallStore,
        delivery: WebhookDelivery,
        clock: Callable[[], float] = time.time,
        poll_s: float = POLL_S,
    ) -> None:
        self._store = store
        self._delivery = delivery
        self._clock = clock
        self._poll_s = poll_s
        self._outage = OutageLog(log, "webhook outbox")
        self._woken = asyncio.Event()

    def wake(self) -> None:
        """A job was queued in this process: look now rather than at the next poll."""
        self._woken.set()

    async def run(self) -> None:
        """Until cancelled. Never raises for a store or network error."""
        while True:
            self._woken.clear()
            if not await self.run_once():
                try:
                    async with asyncio.timeout(self._poll_s):
                        await self._woken.wait()
                except TimeoutError:
                    pass

    async def run_once(self) -> int:
        """Claim and attempt one batch of due jobs; how many there were."""
        try:
            jobs = await self._store.claim_webhook_jobs(self._clock(), LEASE_S, BATCH)
        except Exception as exc:
            self._outage.failed(exc)
            return 0
        self._outage.succeeded()
        async with asyncio.TaskGroup() as group:
            for job in jobs:
                group.create_task(self._attempt(job), name=f"webhook-{job.key}")
        return len(jobs)

    async def _attempt(self, job: WebhookJob) -> None:
        try:
            result = await self._delivery.attempt(job)
            if result.done:
                await self._store.remove_webhook_job(job)
            else:
                await self._store.reschedule_webhook_job(job, self._clock() + result.retry_in)
        except Exception as exc:  # the store is failing: the job keeps its lease and is claimed again after it
            log.warning("webhook job %s not settled (%s): tried again in %.0f s", job.kind.value,
                        type(exc).__name__, LEASE_S)  # fmt: skip
