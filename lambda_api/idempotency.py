"""Idempotency-Key for /make-call: at most one dial per key, always, and a retry learns what the first one did.

A key (hashed with the API key that sent it) goes through three states in the store: `claimed` under a short
lease while the request checks and records the call, `dialling` from just before Twilio is asked (never released
after that unless Twilio refused), `done` with the answer. A retry:
- finds the answer: replays it;
- finds `dialling` without an answer (the answer write was lost, or the first request died mid-dial): reads the
  linked call record, and answers with it once Twilio's call SID is there (our write, or Twilio's first status
  callback) or once the lease has run out (then the SID may be empty: Twilio's callbacks fill it in if it dialled);
- finds `claimed` with the lease run out (its holder died before dialling): takes the claim over and dials, with
  the same call id;
- else waits up to WAIT_S for the first request, then answers 409 `in_progress` with Retry-After.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from call_state.async_store import AsyncCallStore
from call_state.store import IdempotencyClaim, IdemState
from lambda_api.errors import ApiError
from lambda_api.persist import persist

LEASE_S = 30.0
TTL_S = 24 * 3600
WAIT_S = 5.0


@dataclass(frozen=True)
class KeyClaim:
    """This request holds the key: `call_id` is the call it must place (the stored one when resumed)."""

    key: str
    holder: str
    call_id: str


def answer_of(call_id: str, call_sid: str, status: str) -> dict[str, Any]:
    return {"call_id": call_id, "call_sid": call_sid, "status": status}


class IdempotencyKeys:
    def __init__(self, store: AsyncCallStore, clock: Callable[[], float], wait_s: float = WAIT_S) -> None:
        self._store = store
        self._clock = clock
        self.wait_s = wait_s  # how long a retry waits for a first request still in flight

    async def claim(self, api_key: str, header: str, body_hash: str, call_id: str) -> KeyClaim | dict[str, Any]:
        """A KeyClaim to go on with, or the answer to replay; raises 409 (other body, or still in progress)."""
        key = hashlib.sha256(f"{api_key}\x00{header}".encode()).hexdigest()  # reveals neither
        holder = secrets.token_hex(8)
        give_up = time.monotonic() + self.wait_s
        pause = 0.05
        while True:
            now = self._clock()
            claim = await self._store.claim_idempotency_key(key, body_hash, call_id, holder, now, TTL_S, LEASE_S)
            if claim.claimed:
                return KeyClaim(key, holder, claim.call_id)
            if claim.body_hash != body_hash:
                raise ApiError(409, "idempotency_key_reused", "Idempotency-Key was used with a different body")
            if claim.response is not None:
                return claim.response
            if claim.state is IdemState.DIALLING:
                answer = await self._answer_from_record(key, claim, now)
                if answer is not None:
                    return answer
            if time.monotonic() >= give_up:
                raise ApiError(409, "in_progress", "a request with this Idempotency-Key is still in progress",
                               retry_after=max(1, math.ceil(claim.lease_until - now)))  # fmt: skip
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _answer_from_record(self, key: str, claim: IdempotencyClaim, now: float) -> dict[str, Any] | None:
        record = await self._store.get_call(claim.call_id, now)
        if record is None:
            return None
        if record.call_sid:
            answer = answer_of(record.call_id, record.call_sid, record.status.value)
            await persist("idempotency answer", record.call_id, lambda: self.complete_key(key, answer))
            return answer
        if now >= claim.lease_until:  # the first request is gone: what the record says is all there is
            return answer_of(record.call_id, "", record.status.value)
        return None

    async def mark_dialling(self, claim: KeyClaim) -> bool:
        return await self._store.mark_idempotency_dialling(claim.key, claim.holder, self._clock())

    async def complete(self, claim: KeyClaim, answer: dict[str, Any]) -> bool:
        return await persist("idempotency answer", claim.call_id, lambda: self.complete_key(claim.key, answer))

    async def complete_key(self, key: str, answer: dict[str, Any]) -> None:
        await self._store.complete_idempotency_key(key, answer)

    async def release(self, claim: KeyClaim) -> None:
        """Nothing was dialled: let a retry go at once (if this fails, the lease running out does the same)."""
        await persist("idempotency release", claim.call_id,
                      lambda: self._store.release_idempotency_key(claim.key, claim.holder))  # fmt: skip
