"""Optional pacing of /make-call per API key (`MAKE_CALL_RATE_PER_MIN`; 0, the default, paces nothing).

Twilio queues calls above an account's calls-per-second rather than failing them, so no pacing is the default.
Operators who want a ceiling get one that holds across processes and Lambda instances: a counter per key and
minute in the store (`take_rate_slot`, one conditional write), so ten Lambda containers share one budget.
"""

from __future__ import annotations

import hashlib
import math

from call_state.async_store import AsyncCallStore

WINDOW_S = 60


class CallPacing:
    def __init__(self, store: AsyncCallStore, per_minute: int) -> None:
        self._store = store
        self.per_minute = per_minute

    async def wait_seconds(self, api_key: str, now: float) -> int:
        """0 if this request may dial now (and it is counted), else the seconds until the next window."""
        if self.per_minute <= 0:
            return 0
        window = int(now // WINDOW_S)
        key = hashlib.sha256(f"pace\x00{api_key}".encode()).hexdigest()[:32]  # the stored key reveals nothing
        if await self._store.take_rate_slot(key, window, self.per_minute, (window + 2) * WINDOW_S):
            return 0
        return max(1, math.ceil((window + 1) * WINDOW_S - now))
