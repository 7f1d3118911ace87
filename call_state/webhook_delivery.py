"""One attempt at a due end-of-call webhook job: the same code behind the all-in-one worker and the SQS consumer.

    delivery = WebhookDelivery(store, outbound_client(settings))
    result = await delivery.attempt(job)   # result.done: finished; else due again in result.retry_in seconds

The record is read fresh at each attempt, so the body carries the call as GET /calls/{id} shows it then (the
transcript, the recording once Twilio reported it); `event_id` is the same every time. The delivery state is
written into the record's `webhook` field after each attempt. Nothing here raises for the network; a store error
reading the record raises (the outbox keeps the job and it is tried again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from call_state.async_store import AsyncCallStore
from call_state.ids import CALL_ID, loggable
from call_state.outbound import OutboundClient
from call_state.store import CallNotFound
from call_state.webhook_jobs import TIMEOUT_S, Step, WebhookJob, after_attempt, body, next_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttemptResult:
    done: bool  # the job is finished: delivered, given up, or nothing to send
    retry_in: float = 0.0  # otherwise: due again in this many seconds
    gave_up: bool = False  # finished without a delivery, after 24 h of attempts
    sent: bool = False  # a request was made


class WebhookDelivery:
    def __init__(
        self, store: AsyncCallStore, client: OutboundClient | None, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._client = client  # None without WEBHOOK_SECRET: attempts fail (and are retried) until it is set
        self._clock = clock

    async def attempt(self, job: WebhookJob) -> AttemptResult:
        now = self._clock()
        record = await self._store.get_call(job.call_id, now)
        step = next_step(job, record, now)
        if step.step is Step.DROP or record is None:
            log.debug("call %s: %s job dropped: %s", loggable(job.call_id, CALL_ID), job.kind.value, step.why)
            return AttemptResult(done=True)
        if step.step is Step.WAIT:
            return AttemptResult(done=False, retry_in=max(0.0, step.at - now))
        if self._client is None:
            delivered, status, error, ms = False, None, "WEBHOOK_SECRET is not set", 0.0
        else:
            result = await self._client.post_json(record.actions.webhook_url, body(record), timeout_s=TIMEOUT_S,
                                                  read_json=False)  # fmt: skip
            delivered, status, error, ms = result.delivered, result.status, result.detail, result.elapsed_ms
        outcome = after_attempt(job, record.webhook, self._clock(), delivered=delivered, status=status, error=error)
        attempts = outcome.state["attempts"]
        if delivered:
            log.info("call %s (%s): end-of-call webhook delivered (attempt %d, %.0f ms)", job.call_id,
                     record.call_sid, attempts, ms)  # fmt: skip
        elif outcome.gave_up:
            log.error("call %s (%s): end-of-call webhook given up after %d attempts: %s", job.call_id,
                      record.call_sid, attempts, error)  # fmt: skip
        else:
            log.warning("call %s (%s): end-of-call webhook attempt %d failed (%s), next in %.0f s", job.call_id,
                        record.call_sid, attempts, error, outcome.retry_in)  # fmt: skip
        try:
            await self._store.update_call(job.call_id, self._clock(), webhook=outcome.state)
        except CallNotFound:
            pass  # expired meanwhile: nothing left to show the state on
        except Exception as exc:  # the attempt happened: its outcome still decides the job (only the view lags)
            log.warning("call %s (%s): webhook state not written: %s", job.call_id, record.call_sid,
                        type(exc).__name__)  # fmt: skip
        return AttemptResult(outcome.retry_in is None, outcome.retry_in or 0.0, outcome.gave_up, sent=True)
