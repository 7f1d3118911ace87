"""The node's store writer: order kept across failures, retried while the store is down, nothing silently lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from call_state.store import CallNotFound
from media_node.store_writer import StoreWriter
from media_node.task_scope import TaskScope


class Store:
    """Records what was written; `down` makes every write fail like a full disk."""

    def __init__(self) -> None:
        self.down = False
        self.written: list[str] = []
        self.attempts = 0

    def write(self, what: str) -> asyncio.Future[None]:
        async def run() -> None:
            self.attempts += 1
            if self.down:
                raise OSError("database or disk is full")
            if what == "gone":
                raise CallNotFound("c")
            self.written.append(what)

        return asyncio.ensure_future(run())


@pytest.fixture
async def running() -> AsyncIterator[tuple[StoreWriter, list[int]]]:
    lost: list[int] = []
    writer = StoreWriter(on_lost=lost.append, max_backlog=50)
    async with TaskScope() as scope:
        scope.spawn(writer.run(), name="writer")
        yield writer, lost
        scope.cancel()


async def test_writes_wait_out_an_outage_in_order(running: tuple[StoreWriter, list[int]]) -> None:
    writer, lost = running
    store = Store()
    store.down = True
    for i in range(5):
        writer.submit("call-a", f"a{i}", lambda i=i: store.write(f"a{i}"))
        writer.submit("call-b", f"b{i}", lambda i=i: store.write(f"b{i}"))
    await asyncio.sleep(0.5)
    assert store.written == [] and writer.failing and store.attempts > 2 and writer.pending == 10
    assert not await writer.settled("call-a", 0.1)
    store.down = False
    assert await writer.settled("call-a", 5) and await writer.flush(5)
    assert store.written == [f"{c}{i}" for i in range(5) for c in "ab"] and not writer.failing and lost == []


async def test_a_newer_version_replaces_a_queued_one_but_never_one_in_flight(
    running: tuple[StoreWriter, list[int]],
) -> None:
    writer, _ = running
    store = Store()
    store.down = True
    writer.submit("call-a", "turn", lambda: store.write("turn 0 v1"), key="turn-0")
    await asyncio.sleep(0.1)  # v1 is being attempted (and failing)
    writer.submit("call-a", "turn", lambda: store.write("turn 0 v2"), key="turn-0")
    writer.submit("call-a", "turn", lambda: store.write("turn 0 v3"), key="turn-0")  # replaces the queued v2
    store.down = False
    assert await writer.flush(5)
    assert store.written == ["turn 0 v1", "turn 0 v3"]


async def test_what_cannot_be_kept_is_counted(running: tuple[StoreWriter, list[int]]) -> None:
    writer, lost = running
    store = Store()
    writer.submit("call-a", "x", lambda: store.write("gone"))  # the call no longer exists
    assert await writer.flush(5)
    store.down = True
    for i in range(60):  # more than the backlog holds while the store is down
        writer.submit("call-b", "y", lambda i=i: store.write(f"y{i}"))
    assert sum(lost) == 1 + 60 - 50  # the one whose call is gone, and what did not fit in the backlog
    store.down = False
    assert await writer.flush(5) and len(store.written) == 50
