"""Store writes off the audio path: one ordered backlog, retried while the store is down, never silently lost.

The bridge never awaits the store while moving audio: it submits a write and goes on. One worker runs the writes
in the order they were submitted (so one call's writes stay in order). A write that fails with a transient error
(disk full, DynamoDB throttling, a network blip) is retried with backoff, blocking the ones behind it, so nothing
overtakes it; the backlog is bounded, and what does not fit, or finally fails for good (the call no longer
exists), is counted in /metrics (`voice_store_writes_lost_total`) and logged once per call. `settled(call_id)`
waits, bounded, for one call's writes; `flush()` for all of them (drain, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from call_state.ids import CALL_ID, loggable
from call_state.store import CallNotFound

log = logging.getLogger(__name__)

Write = Callable[[], Awaitable[object]]
MAX_BACKLOG = 50_000  # ~ a few hundred calls' worth of turns, figures and statuses while the store is down
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # then 2 s between tries, for as long as the backlog has room


@dataclass
class _Pending:
    call_id: str
    what: str
    write: Write


class StoreWriter:
    def __init__(self, on_lost: Callable[[int], None] | None = None, max_backlog: int = MAX_BACKLOG) -> None:
        self._backlog: OrderedDict[object, _Pending] = OrderedDict()
        self._seq = 0
        self._wake = asyncio.Event()
        self._per_call: defaultdict[str, int] = defaultdict(int)
        self._settled: dict[str, asyncio.Event] = {}
        self._lost_logged: set[str] = set()
        self._on_lost = on_lost or (lambda n: None)
        self._max = max_backlog
        self.failing = False  # the last attempt failed: the store is down (for /healthz and logs)

    def submit(self, call_id: str, what: str, write: Write, key: str | None = None) -> None:
        slot: object = (call_id, key) if key is not None else self._next_seq()
        if slot in self._backlog:  # a newer version of a write still queued: replace it, keep its place
            self._backlog[slot].write = write
            return
        if len(self._backlog) >= self._max:
            self._lost(call_id, what, "the store has been failing and the backlog is full")
            return
        self._backlog[slot] = _Pending(call_id, what, write)
        self._per_call[call_id] += 1
        self._wake.set()

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    @property
    def pending(self) -> int:
        """Writes not yet done (queued, or the one being attempted)."""
        return sum(self._per_call.values())

    async def run(self) -> None:
        """The one worker: runs forever (owned by the node's task scope)."""
        while True:
            if not self._backlog:
                self._wake.clear()
                await self._wake.wait()
                continue
            _, pending = self._backlog.popitem(last=False)  # a newer version submitted now queues behind it
            await self._attempt(pending)
            self._done(pending.call_id)

    async def _attempt(self, pending: _Pending) -> None:
        tries = 0
        while True:
            try:
                await pending.write()
            except CallNotFound:
                self._lost(pending.call_id, pending.what, "the call no longer exists")
                return
            except Exception as exc:  # transient: keep the order, retry with backoff
                if not self.failing:
                    log.warning("store write failing (%s: %s): retrying, writes are kept in order",
                                type(exc).__name__, str(exc)[:200])  # fmt: skip
                self.failing = True
                await asyncio.sleep(BACKOFF_S[min(tries, len(BACKOFF_S) - 1)])
                tries += 1
                continue
            if self.failing:
                log.info("store writes work again (%d queued)", len(self._backlog))
                self.failing = False
            return

    def _lost(self, call_id: str, what: str, why: str) -> None:
        self._on_lost(1)
        if call_id not in self._lost_logged:
            self._lost_logged.add(call_id)
            log.error("call %s: store write lost (%s): %s (further losses of this call only counted)",
                      loggable(call_id, CALL_ID), what, why)  # fmt: skip

    def _done(self, call_id: str) -> None:
        self._per_call[call_id] -= 1
        if self._per_call[call_id] <= 0:
            del self._per_call[call_id]
            self._lost_logged.discard(call_id)
            event = self._settled.pop(call_id, None)
            if event is not None:
                event.set()

    async def settled(self, call_id: str, timeout: float) -> bool:
        """Wait until every write submitted for `call_id` has run; False at the deadline."""
        if call_id not in self._per_call:
            return True
        event = self._settled.setdefault(call_id, asyncio.Event())
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def abandon(self) -> int:
        """Shutting down with writes still failing: count and log them as lost (once per call)."""
        left = list(self._backlog.values())
        self._backlog.clear()
        for pending in left:
            self._lost(pending.call_id, pending.what, "the node stopped while the store was still failing")
        return len(left)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the backlog is empty (every call settled); False at the deadline."""
        waits = [self.settled(call_id, timeout) for call_id in list(self._per_call)]
        return all(await asyncio.gather(*waits))
