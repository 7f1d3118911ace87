"""Who gets a socket and who gets a call slot on this node: counts and rules, sans-I/O (time passed in).

A socket that has not shown a valid, claimed `start` is *pending*: it costs a few kilobytes and no call slot,
and there may be thousands of them (`MAX_PENDING_STREAMS`); each must show its `start` within
`START_TIMEOUT_S`. A call slot (`MAX_CONCURRENT_CALLS`) is reserved only after the token is verified, just before
the stream is claimed. Draining refuses calls created after the drain began; a call dialled before it and
answered during it is still bridged.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_PENDING_STREAMS = 2000  # measured at ~28 KB each (uvicorn + Starlette + us): ~56 MB at the bound
START_TIMEOUT_S = 3.0  # Twilio sends `connected` and `start` at once
MAX_FRAMES_BEFORE_START = 8  # `connected`, `start`, and some slack
MAX_BYTES_BEFORE_START = 16 * 1024


@dataclass
class Admission:
    max_calls: int
    max_pending: int = MAX_PENDING_STREAMS
    pending: int = 0
    active: int = 0
    drain_started_at: float | None = None

    @property
    def draining(self) -> bool:
        return self.drain_started_at is not None

    @property
    def full(self) -> bool:
        return self.active >= self.max_calls

    def open_socket(self) -> str | None:
        """A new upgrade: None if it may wait for its `start`, else the refusal."""
        if self.pending >= self.max_pending:
            return "too many pending streams"
        self.pending += 1
        return None

    def socket_decided(self) -> None:
        """The pending socket was admitted as a call or refused."""
        self.pending -= 1

    def reserve_call(self, created_at: float) -> str | None:
        """A verified stream asks for a slot: None (reserved) or the refusal."""
        if self.drain_started_at is not None and created_at >= self.drain_started_at:
            return "draining"
        if self.full:
            return "at capacity"
        self.active += 1
        return None

    def call_ended(self) -> None:
        self.active -= 1

    def start_drain(self, now: float) -> bool:
        """True the first time."""
        if self.drain_started_at is not None:
            return False
        self.drain_started_at = now
        return True
