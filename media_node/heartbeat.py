"""The node's heartbeat: where the control plane reads whether this node can take calls (call_state.nodes).

`HeartbeatPublisher(store, snapshot).run()` writes `snapshot()` now and every `interval_s` (one task of the node's
TaskGroup); `publish_now()` writes at once (call it when the drain starts, so /make-call refuses from that moment
rather than up to one interval later). A heartbeat is fresh for `HEARTBEAT_TTL_FACTOR` intervals: a node that
dies without draining stops counting within that time. A store error is logged once per outage, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from call_state.async_store import AsyncCallStore
from call_state.nodes import NodeHeartbeat
from call_state.outage import OutageLog
from call_state.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT_TTL_FACTOR = 2.5  # a node is counted for 2.5 intervals after its last heartbeat (two may be lost)


class NodeState(Protocol):
    """What a heartbeat reads from the node (MediaNode has these)."""

    @property
    def draining(self) -> bool: ...

    @property
    def active_calls(self) -> int: ...


def node_configured(settings: Settings) -> bool:
    """Can this node bridge a call: a Gemini key to open sessions, a stream-token secret to admit streams."""
    return bool(settings.gemini_api_key) and len(settings.stream_token_secret.encode()) >= 16


def node_snapshot(
    node: NodeState, settings: Settings, clock: Callable[[], float] = time.time, url: str = ""
) -> NodeHeartbeat:
    return NodeHeartbeat(
        node_id=settings.node_id,
        draining=node.draining,
        configured=node_configured(settings),
        active_calls=node.active_calls,
        capacity=settings.max_concurrent_calls,
        at=clock(),
        url=url,
    )


class HeartbeatPublisher:
    def __init__(self, store: AsyncCallStore, snapshot: Callable[[], NodeHeartbeat], interval_s: float = 10.0) -> None:
        self._store = store
        self._snapshot = snapshot
        self.interval_s = interval_s
        self.ttl_seconds = max(1, round(interval_s * HEARTBEAT_TTL_FACTOR))
        self._lock = asyncio.Lock()  # a periodic write never lands after (and overwrites) a newer one
        self._outage = OutageLog(log, "node heartbeat")

    async def run(self) -> None:
        """Publish now and every interval until cancelled."""
        while True:
            await self.publish_now()
            await asyncio.sleep(self.interval_s)

    async def publish_now(self) -> None:
        async with self._lock:
            heartbeat = self._snapshot()  # taken inside the lock: the latest state is what lands last
            try:
                await self._store.put_node_heartbeat(heartbeat, self.ttl_seconds)
            except Exception as exc:  # the store is down: the next beat tries again
                self._outage.failed(exc)
                return
            self._outage.succeeded()
