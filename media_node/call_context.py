"""`CallContext`: what every object of one call shares — its ids, its log, its store writes, the clock.

`CallLog` puts "call <id> (<call SID>):" in front of every line, with ids validated against their formats (a
value from the wire is never logged raw). Frame errors are logged a few times per call and then only counted,
so no socket can flood the log. Store writes go through the node's `StoreWriter` keyed by call id, so they stay
in order, are retried while the store is down, and can be waited for when the call ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from call_state.ids import CALL_ID, CALL_SID, loggable
from media_node.metrics import MediaMetrics
from media_node.store_writer import StoreWriter

log = logging.getLogger("media_node.call")
LOGGED_FRAME_ERRORS = 3  # per call and side; the rest are only counted (voice_frame_errors_total)


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """A logger for one call: every line starts with the call id and call SID."""

    def __init__(self, logger: logging.Logger, call_id: str = "-", call_sid: str = "-") -> None:
        super().__init__(logger, {})
        self.set_ids(call_id, call_sid)

    def set_ids(self, call_id: str, call_sid: str) -> None:
        # Validated here, so the prefix can never carry a newline, a '%' or a megabyte.
        call_id = call_id if call_id == "-" else loggable(call_id, CALL_ID)
        call_sid = call_sid if call_sid == "-" else loggable(call_sid, CALL_SID)
        self._prefix = f"call {call_id} ({call_sid}): ".replace("%", "%%")

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return self._prefix + str(msg), kwargs


@dataclass
class FrameErrors:
    """How many malformed frames one side of one call sent; only the first few are logged."""

    count: int = 0

    def note(self) -> bool:
        """Count one; True while it should still be logged."""
        self.count += 1
        return self.count <= LOGGED_FRAME_ERRORS


@dataclass
class CallContext:
    log: CallLog
    metrics: MediaMetrics
    writer: StoreWriter
    clock: Callable[[], float] = time.time  # wall clock: times stored in the record
    monotonic: Callable[[], float] = time.monotonic  # durations and deadlines
    call_id: str = "-"
    call_sid: str = "-"  # the record's own SID (never one from the stream)
    errors: dict[str, FrameErrors] = field(default_factory=dict)

    def bind(self, call_id: str, call_sid: str) -> None:
        self.call_id, self.call_sid = call_id, call_sid or "-"
        self.log.set_ids(call_id, self.call_sid)

    def write(self, what: str, write: Callable[[], Awaitable[object]], key: str | None = None) -> None:
        """Queue a store write for this call (in order, retried). Writes with the same `key` still queued are
        replaced by the newest (a partial transcript turn rewritten as it grows)."""
        self.writer.submit(self.call_id, what, write, key)

    def frame_error(self, side: str, reason: str) -> None:
        self.metrics.frame_errors.labels(side=side).inc()
        errors = self.errors.setdefault(side, FrameErrors())
        if errors.note():
            more = " (further ones are only counted)" if errors.count == LOGGED_FRAME_ERRORS else ""
            self.log.warning("%s frame ignored: %s%s", side.capitalize(), reason[:120], more)
