"""Where the control plane learns whether the media plane would bridge a call dialled now.

`MediaPlane.admission(now)` answers from the nodes' heartbeats (call_state.nodes.admit). Two sources:
- `StoreMediaPlane`: the heartbeats media nodes write to the store, summed over the fleet. This is the Lambda
  control plane (and any control plane in another process than its node). No fresh heartbeat means the media
  node is down or not deployed: /make-call answers 503 `unavailable` rather than dial into nothing.
- `LocalMediaPlane`: the all-in-one server's own node, read in process (a drain is seen at once).
Capacity is checked against live calls in the store as the call record is created (`create_call(max_live=...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from call_state.async_store import AsyncCallStore
from call_state.nodes import NodeHeartbeat, PlaneAdmission, PlaneState, admit


class MediaPlane(Protocol):
    async def admission(self, now: float) -> PlaneAdmission: ...


class StoreMediaPlane:
    def __init__(self, store: AsyncCallStore) -> None:
        self._store = store

    async def admission(self, now: float) -> PlaneAdmission:
        return admit(await self._store.node_heartbeats(now))


class LocalMediaPlane:
    """`snapshot` reads the in-process node; `not_configured_detail` names what it lacks (for the 503 message)."""

    def __init__(self, snapshot: Callable[[], NodeHeartbeat], not_configured_detail: str = "") -> None:
        self._snapshot = snapshot
        self._detail = not_configured_detail

    async def admission(self, now: float) -> PlaneAdmission:
        admission = admit([self._snapshot()])
        if admission.state is PlaneState.NOT_CONFIGURED and self._detail:
            admission = replace(admission, message=f"the media node is not configured: {self._detail}")
        return admission
