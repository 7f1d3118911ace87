"""`persist()`: a store write that must not be lost to one hiccup, retried a few times with backoff.

Used for the writes that follow a dial Twilio accepted (the call SID, the first status, the Idempotency-Key's
answer): the call is placed whatever happens, so a failing store delays the answer by at most ~1 s and never
turns a placed call into an error; what is still lost is logged with the call id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

BACKOFF_S = (0.05, 0.2, 0.6)  # three retries after the first attempt, ~0.85 s in all


async def persist(what: str, call_id: str, write: Callable[[], Awaitable[object]]) -> bool:
    """True once `write()` succeeded; False (logged once) if every attempt failed."""
    for attempt, pause in enumerate((*BACKOFF_S, None)):
        try:
            await write()
            return True
        except Exception as exc:
            if pause is None:
                log.error("call %s: %s lost after %d attempts: %s", call_id, what, attempt + 1, type(exc).__name__)
                return False
            await asyncio.sleep(pause)
    return False  # unreachable: the loop returns on its last attempt
