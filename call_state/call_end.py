"""The end of a call: queue its end-of-call webhook once both sides have reported, whichever comes last.

Two sides report the end of a phone call, in either order:
- the control plane, when Twilio's status callback says the call is over (`status_done`);
- the media node, when it has written the call's last transcript turns and figures (`media_done`).
A call that never had a stream (busy, no answer, a failed dial) needs only the first.

Each side makes the store's conditional write (`CallStore.media_done` / `status_done`); the one that completes the
pair gets True and queues a `deliver` job in the outbox (SQS or the store: call_state/webhook_outbox.py). Before
its own mark, the status side also queues a `deadline` job two minutes out, so a media node that dies mid-call,
or a completer that dies between its write and its enqueue, cannot lose the webhook (call_state/webhook_jobs.py).

    end_of_call = end_of_call_for(settings, store)     # once per process
    await end_of_call.media_done(call_id, now)          # the media node, after its last writes
    await end_of_call.status_done(call_id, now)         # the control plane, on a terminal status
"""

from __future__ import annotations

import asyncio
import logging

from call_state.async_store import AsyncCallStore
from call_state.ids import CALL_ID, loggable
from call_state.settings import Settings
from call_state.store import CallNotFound, CallStore
from call_state.webhook_jobs import WebhookJob, deadline_job, deliver_job
from call_state.webhook_outbox import WebhookOutbox, outbox_for

log = logging.getLogger(__name__)
ENQUEUE_BACKOFF_S = (0.1, 0.5, 2.0)  # the pair is complete: only this process can still queue the delivery


class EndOfCall:
    def __init__(self, store: AsyncCallStore, outbox: WebhookOutbox) -> None:
        self.store = store
        self.outbox = outbox

    async def media_done(self, call_id: str, now: float) -> bool:
        """The media side is done (its last turns and figures are written). True when this completed the pair (the
        webhook, if the call has one, is then queued). An unknown call is False; a store failure raises (retry)."""
        try:
            if not await self.store.media_done(call_id, now):
                return False
        except CallNotFound:
            return False
        record = await self.store.get_call(call_id, now)
        if record is not None and record.actions.webhook_url:
            await self._enqueue(deliver_job(call_id, now))
        return True

    async def status_done(self, call_id: str, now: float) -> bool:
        """Twilio said the call is over. True when this completed the pair and the webhook is queued. Calls without
        a `webhook_url` cost one read and nothing else."""
        record = await self.store.get_call(call_id, now)
        if record is None or not record.actions.webhook_url:
            return False
        if not record.webhook:  # no attempt yet: the safety net first, then the mark
            await self._enqueue(deadline_job(call_id, now))
        try:
            if not await self.store.status_done(call_id, now):
                return False
        except CallNotFound:
            return False
        await self._enqueue(deliver_job(call_id, now))
        return True

    async def _enqueue(self, job: WebhookJob) -> None:
        for pause in (*ENQUEUE_BACKOFF_S, None):
            try:
                await self.outbox.enqueue(job)
                return
            except Exception as exc:
                if pause is None:
                    log.error("call %s: end-of-call webhook %s job not queued: %s",
                              loggable(job.call_id, CALL_ID), job.kind.value, type(exc).__name__)  # fmt: skip
                    raise
                await asyncio.sleep(pause)


def end_of_call_for(settings: Settings, store: CallStore | AsyncCallStore) -> EndOfCall:
    """The process's end-of-call logic: SQS as the outbox when `WEBHOOK_QUEUE_URL` is set, else the store."""
    async_store = store if isinstance(store, AsyncCallStore) else AsyncCallStore(store)
    return EndOfCall(async_store, outbox_for(settings, async_store))
