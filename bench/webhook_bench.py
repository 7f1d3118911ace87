"""End of a call and its webhook: what the two conditional writes cost, and how soon the webhook leaves.

    bench/.venv/bin/python -m bench.webhook_bench [--quick]

- the pair: `status_done` then `media_done` on one call (the second completes it), SQLite and a real DynamoDB
  Local (loopback), per call;
- one delivery attempt: `WebhookDelivery.attempt` (the record read, the signed POST to a loopback receiver, the
  state write), SQLite;
- end to end on the all-in-one path: from the status side completing the pair to the receiver's arrival, through
  the `OutboxWorker` woken by the control API's outbox (a job queued by another process or object waits for the
  worker's next look, at most `POLL_S` = 1 s later).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

from bench.control_bench import on_dynamodb_local, p50_p99
from bench.node_process import bench_call
from call_state.agent_actions import CallActions
from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall
from call_state.outbound import OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import WebhookSigner
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_jobs import deliver_job
from call_state.webhook_outbox import StoreOutbox
from call_state.webhook_worker import OutboxWorker
from tests.standins.receiver import Receiver

SECRET = b"bench-webhook-secret-not-real-01"


def pair_ms(store: CallStore, n: int) -> list[float]:
    times = []
    for i in range(n):
        call_id, now = f"pair-{i}", time.time()
        store.create_call(bench_call(call_id, now))
        store.claim_stream(call_id, "MZ" + "1" * 32, "bench", now)
        start = time.perf_counter()
        assert store.status_done(call_id, now) is False and store.media_done(call_id, now) is True
        times.append((time.perf_counter() - start) * 1000)
    return times


async def delivery_ms(store: CallStore, n: int) -> tuple[list[float], list[float]]:
    async_store = AsyncCallStore(store)
    client = OutboundClient(WebhookSigner(SECRET), OutboundPolicy(frozenset({"127.0.0.1"})))
    delivery = WebhookDelivery(async_store, client)
    attempts, end_to_end = [], []
    with Receiver(SECRET) as receiver:
        hooked = CallActions(webhook_url=receiver.url("/events"))
        for i in range(n + 3):  # the first few warm the pools
            call_id = f"hook-{i}"
            store.create_call(bench_call(call_id, time.time()).with_changes(actions=hooked))
            start = time.perf_counter()
            result = await delivery.attempt(deliver_job(call_id, time.time()))
            assert result.done and not result.gave_up
            if i >= 3:
                attempts.append((time.perf_counter() - start) * 1000)
        worker = OutboxWorker(async_store, delivery)
        end_of_call = EndOfCall(async_store, StoreOutbox(async_store, on_enqueued=worker.wake))
        task = asyncio.create_task(worker.run())
        for i in range(max(5, n // 10)):
            call_id = f"end-{i}"
            store.create_call(bench_call(call_id, time.time()).with_changes(actions=hooked))
            before = receiver.deliveries()
            start = time.time()
            assert await end_of_call.status_done(call_id, time.time())  # no stream: this completes the pair
            while receiver.deliveries() == before:
                await asyncio.sleep(0.005)
            end_to_end.append((receiver.received[-1].at - start) * 1000)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await client.aclose()
    return attempts, end_to_end


def run(quick: bool = False) -> list[dict[str, Any]]:
    n = 100 if quick else 500
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = pair_ms(SqliteCallStore(f"{tmp}/pair.db"), n)
        attempts, end_to_end = asyncio.run(delivery_ms(SqliteCallStore(f"{tmp}/hooks.db"), n // 2))
    dynamo = on_dynamodb_local(lambda store: pair_ms(store, n // 5))
    rows: list[dict[str, Any]] = [
        {"figure": "end of call: status_done + media_done (the pair), SQLite", "unit": "ms p50/p99",
         "ours": p50_p99(sqlite)},
        {"figure": "webhook: one attempt (record read, signed POST to loopback, state write), SQLite",
         "unit": "ms p50/p99", "ours": p50_p99(attempts)},
        {"figure": "webhook: pair completed -> at the receiver, all-in-one (worker woken)", "unit": "ms p50/p99",
         "ours": p50_p99(end_to_end)},
    ]  # fmt: skip
    if isinstance(dynamo, str):
        rows.append(
            {"figure": "end of call: DynamoDB Local row not measured", "ours": None, "unit": "", "note": dynamo}
        )
    else:
        rows.append({"figure": "end of call: status_done + media_done, DynamoDB Local", "unit": "ms p50/p99",
                     "ours": p50_p99(dynamo)})  # fmt: skip
    return rows


if __name__ == "__main__":
    from bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
