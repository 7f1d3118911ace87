"""What the media plane tells the control plane, and the rule that decides whether a new call may be dialled.

Each media node writes a `NodeHeartbeat` to the store every few seconds (and at once when it starts draining);
the control plane reads the fresh ones and asks `admit()` whether a dial now would be bridged. Sans-I/O: plain
values in, a `PlaneAdmission` out; the store reads and the clock live with the callers.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

# How long a call may count as live after it was created: Twilio's queue (calls above the account's CPS wait
# there), the ring time we ask for, then MAX_CALL_SECONDS of talk (Twilio's TimeLimit starts at the answer).
QUEUE_ALLOWANCE_SECONDS = 120
RING_TIMEOUT_SECONDS = 30

# Retry-After (seconds) per refusal: a full node frees a slot when any call ends; a drain is an upgrade in progress
# or a node going away; a missing or misconfigured node needs an operator.
RETRY_AFTER = {"full": 10, "draining": 30, "unavailable": 30, "not_configured": 60}


def live_window_seconds(max_call_seconds: int) -> int:
    """A call created longer ago than this is over, whatever its status says (a lost final callback)."""
    return QUEUE_ALLOWANCE_SECONDS + RING_TIMEOUT_SECONDS + max_call_seconds


@dataclass(frozen=True)
class NodeHeartbeat:
    """One media node's state, as it last reported it. `url` is where the control plane may reach its internal
    API (empty when it has none); `at` is when the node took this snapshot (Unix seconds)."""

    node_id: str
    draining: bool
    configured: bool
    active_calls: int
    capacity: int
    at: float
    url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeHeartbeat:
        return cls(
            node_id=str(d["node_id"]),
            draining=bool(d.get("draining", False)),
            configured=bool(d.get("configured", False)),
            active_calls=int(d.get("active_calls", 0)),
            capacity=int(d.get("capacity", 0)),
            at=float(d.get("at", 0.0)),
            url=str(d.get("url", "")),
        )


class PlaneState(enum.StrEnum):
    OK = "ok"
    FULL = "full"  # every usable node's slots are taken by live calls
    DRAINING = "draining"  # configured nodes exist, but all of them are draining
    NOT_CONFIGURED = "not_configured"  # nodes report in, none can open a Gemini session
    UNAVAILABLE = "unavailable"  # no fresh heartbeat: the media plane is down or not deployed


@dataclass(frozen=True)
class PlaneAdmission:
    state: PlaneState
    capacity: int  # slots of the usable nodes (configured, not draining): what live calls may fill
    nodes: int  # fresh heartbeats seen
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.state is PlaneState.OK

    @property
    def retry_after(self) -> int:
        return RETRY_AFTER.get(self.state.value, 0)


def admit(heartbeats: Sequence[NodeHeartbeat], live_calls: int | None = None) -> PlaneAdmission:
    """May a new call be dialled? `live_calls` (from the store) is compared with the usable capacity when given;
    without it only the nodes' states are judged (the store then checks capacity atomically as it creates)."""
    usable = [h for h in heartbeats if h.configured and not h.draining]
    capacity = sum(max(0, h.capacity) for h in usable)
    n = len(heartbeats)
    if not heartbeats:
        return PlaneAdmission(PlaneState.UNAVAILABLE, 0, 0, "no media node has reported in: it is down or not deployed")
    if not usable:
        if any(h.configured for h in heartbeats):
            return PlaneAdmission(PlaneState.DRAINING, 0, n, "the media plane is draining (an upgrade or a shutdown)")
        return PlaneAdmission(
            PlaneState.NOT_CONFIGURED, 0, n, "the media node is not configured (see its start-up log)"
        )
    if capacity <= 0 or (live_calls is not None and live_calls >= capacity):
        return PlaneAdmission(PlaneState.FULL, capacity, n, f"the media plane holds its {capacity} live calls")
    return PlaneAdmission(PlaneState.OK, capacity, n)
