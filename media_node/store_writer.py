"""Store writes off the audio path: a bounded queue drained by one background task.

The bridge never awaits the store while moving audio; it enqueues a write and goes on. If the queue is full
(the store is down or very slow) the write is dropped and logged rather than stalling a call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[object]]


class StoreWriter:
    def __init__(self, max_pending: int = 10_000) -> None:
        self._queue: asyncio.Queue[tuple[str, Write]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def submit(self, what: str, write: Write) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="store-writer")
        try:
            self._queue.put_nowait((what, write))
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("store writer full: dropped %s", what)

    async def _drain(self) -> None:
        while True:
            what, write = await self._queue.get()
            try:
                await write()
            except Exception:  # one failed write must not stop the others
                log.exception("store write failed: %s", what)
            finally:
                self._queue.task_done()

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every submitted write has run (end of call, shutdown)."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            log.error("store writer: %d writes still pending after %.0f s", self._queue.qsize(), timeout)
