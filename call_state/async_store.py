"""`AsyncCallStore`: the CallStore methods as coroutines, run on one worker thread.

The stores are synchronous (sqlite3, boto3). Running them on a dedicated single-thread executor keeps the event
loop free and keeps one call's writes in the order they were made (a shared default pool would not).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from call_state.nodes import NodeHeartbeat
from call_state.record import (
    CallFigures,
    CallRecord,
    Recording,
    StatusEvent,
    StreamEvent,
    ToolCallRecord,
    TranscriptTurn,
)
from call_state.status_rules import StatusUpdate
from call_state.store import CallPage, CallStore, IdempotencyClaim
from call_state.webhook_jobs import WebhookJob

T = TypeVar("T")


class AsyncCallStore:
    def __init__(self, store: CallStore, workers: int = 1) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="call-store")

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def create_call(self, record: CallRecord, *, max_live: int | None = None, live_since: float = 0.0) -> None:
        await self._run(self.store.create_call, record, max_live=max_live, live_since=live_since)

    async def count_live_calls(self, since: float, now: float) -> int:
        return await self._run(self.store.count_live_calls, since, now)

    async def get_call(self, call_id: str, now: float) -> CallRecord | None:
        return await self._run(self.store.get_call, call_id, now)

    async def list_calls(self, now: float, limit: int = 20, cursor: str | None = None) -> CallPage:
        return await self._run(self.store.list_calls, now, limit, cursor)

    async def apply_status(self, call_id: str, event: StatusEvent, now: float) -> StatusUpdate:
        return await self._run(self.store.apply_status, call_id, event, now)

    async def update_call(
        self,
        call_id: str,
        now: float,
        *,
        call_sid: str | None = None,
        error: str | None = None,
        figures: CallFigures | None = None,
        transferred_to: str | None = None,
        answered_by: str | None = None,
        recording: Recording | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> None:
        fields = {"call_sid": call_sid, "error": error, "figures": figures, "transferred_to": transferred_to,
                  "answered_by": answered_by, "recording": recording, "webhook": webhook}  # fmt: skip
        await self._run(self.store.update_call, call_id, now, **{k: v for k, v in fields.items() if v is not None})

    async def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        await self._run(self.store.claim_stream, call_id, stream_sid, media_node, now)

    async def add_tool_call(self, call_id: str, call: ToolCallRecord) -> None:
        await self._run(self.store.add_tool_call, call_id, call)

    async def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        await self._run(self.store.add_turn, call_id, turn)

    async def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        await self._run(self.store.add_stream_event, call_id, event)

    async def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, holder: str, now: float, ttl_seconds: int, lease_seconds: float
    ) -> IdempotencyClaim:
        return await self._run(
            self.store.claim_idempotency_key, key, body_hash, call_id, holder, now, ttl_seconds, lease_seconds
        )

    async def mark_idempotency_dialling(self, key: str, holder: str, now: float) -> bool:
        return await self._run(self.store.mark_idempotency_dialling, key, holder, now)

    async def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        await self._run(self.store.complete_idempotency_key, key, response)

    async def release_idempotency_key(self, key: str, holder: str) -> None:
        await self._run(self.store.release_idempotency_key, key, holder)

    async def take_rate_slot(self, key: str, window: int, limit: int, expires_at: int) -> bool:
        return await self._run(self.store.take_rate_slot, key, window, limit, expires_at)

    async def put_node_heartbeat(self, heartbeat: NodeHeartbeat, ttl_seconds: int) -> None:
        await self._run(self.store.put_node_heartbeat, heartbeat, ttl_seconds)

    async def node_heartbeats(self, now: float) -> list[NodeHeartbeat]:
        return await self._run(self.store.node_heartbeats, now)

    async def media_done(self, call_id: str, now: float) -> bool:
        return await self._run(self.store.media_done, call_id, now)

    async def status_done(self, call_id: str, now: float) -> bool:
        return await self._run(self.store.status_done, call_id, now)

    async def add_webhook_job(self, job: WebhookJob, expires_at: int) -> None:
        await self._run(self.store.add_webhook_job, job, expires_at)

    async def claim_webhook_jobs(self, now: float, lease_s: float, limit: int) -> list[WebhookJob]:
        return await self._run(self.store.claim_webhook_jobs, now, lease_s, limit)

    async def reschedule_webhook_job(self, job: WebhookJob, due_at: float) -> None:
        await self._run(self.store.reschedule_webhook_job, job, due_at)

    async def remove_webhook_job(self, job: WebhookJob) -> None:
        await self._run(self.store.remove_webhook_job, job)

    async def sweep_expired(self, now: float) -> int:
        return await self._run(self.store.sweep_expired, now)

    async def close(self) -> None:
        await self._run(self.store.close)
        self._pool.shutdown(wait=False)
