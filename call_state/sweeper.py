"""`StoreSweeper`: deletes expired rows from the store every few minutes (SQLite; DynamoDB has its own TTL).

Run by the long-lived processes that own a store (the all-in-one server, the standalone media node) as one task
of their TaskGroup: `tg.create_task(StoreSweeper(store).run())`. Each store pass is bounded, so a large backlog is
worked off in short steps that leave the store's worker thread free for live calls in between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from call_state.async_store import AsyncCallStore
from call_state.outage import OutageLog

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 300.0
MAX_PASSES = 100  # per sweep: at 2,000 calls a pass, 200,000 expired calls; the rest waits for the next sweep


class StoreSweeper:
    def __init__(
        self,
        store: AsyncCallStore,
        clock: Callable[[], float] = time.time,
        interval_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._interval_s = interval_s
        self._outage = OutageLog(log, "store sweep")

    async def run(self) -> None:
        """Sweep now and every interval, until cancelled. Never raises for a store error."""
        while True:
            await self.sweep_once()
            await asyncio.sleep(self._interval_s)

    async def sweep_once(self) -> int:
        """Rows deleted by this sweep (0 when the store failed: the next sweep tries again)."""
        deleted = 0
        try:
            for _ in range(MAX_PASSES):
                removed = await self._store.sweep_expired(self._clock())
                deleted += removed
                if removed == 0:
                    break
        except Exception as exc:  # a store outage must not end the task that keeps the file small
            self._outage.failed(exc)
            return deleted
        self._outage.succeeded()
        if deleted:
            log.info("store sweep: %d expired rows deleted", deleted)
        return deleted
