"""`TaskScope`: the owner of one call's tasks. Structured concurrency on top of `asyncio.TaskGroup`.

Every task of a call (the two bridge loops, the limits timer, a goAway switch, a goodbye, a tool request) is
spawned here. `cancel()` cancels them all; leaving the `async with` waits for every one of them, so a call's
teardown leaves nothing running behind it. A task that raises (a bug) cancels the others and surfaces as an
exception group from the `async with`, as TaskGroup does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any


class TaskScope:
    def __init__(self) -> None:
        self._group = asyncio.TaskGroup()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False

    async def __aenter__(self) -> TaskScope:
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        await self._group.__aexit__(et, exc, tb)

    def spawn(self, coro: Coroutine[Any, Any, object], name: str) -> asyncio.Task[Any] | None:
        """Run `coro` as a task of this scope; None (and the coroutine closed) once the scope is cancelled."""
        if self._closing:
            coro.close()
            return None
        task = self._group.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def cancel(self) -> None:
        """Cancel every task; the `async with` then waits for them to finish."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
