"""What one call writes into its record, in order, through the node's store writer (never on the audio path).

The stream itself was claimed synchronously before the call started (stream_intake.py); everything after goes
through here: the `in-progress` status, each transcript turn (partial ones rewritten as they grow), the figures,
a failure's reason, and the end of a browser call (no Twilio callback will report it).
"""

from __future__ import annotations

import functools

from call_state.async_store import AsyncCallStore
from call_state.record import CallFigures, CallStatus, StatusEvent, ToolCallRecord, TranscriptTurn
from media_node.call_context import CallContext
from media_node.call_phase import CallOutcome


class CallWrites:
    def __init__(self, ctx: CallContext, store: AsyncCallStore, call_id: str) -> None:
        self._ctx, self._store, self._call_id = ctx, store, call_id

    def status(self, status: CallStatus, detail: str = "") -> None:
        event = StatusEvent(status, self._ctx.clock(), None, "media", detail[:500])
        self._ctx.write(status.value, lambda: self._store.apply_status(self._call_id, event, event.at))

    def turns(self, turns: list[TranscriptTurn]) -> None:
        for turn in turns:
            # One key per turn index: a partial turn still queued is replaced by its newer, longer version.
            write = functools.partial(self._store.add_turn, self._call_id, turn)
            self._ctx.write("turn", write, key=f"turn-{turn.index}")

    def figures(self, figures: CallFigures) -> None:
        self._ctx.write("figures", lambda: self._store.update_call(self._call_id, self._ctx.clock(), figures=figures))

    def failed(self, reason: str) -> None:
        self.status(CallStatus.FAILED, reason)
        self._ctx.write("error", lambda: self._store.update_call(self._call_id, self._ctx.clock(), error=reason[:1000]))

    def ended(self, outcome: CallOutcome) -> None:
        """A browser call is over (a phone call's end is reported by Twilio's status callback)."""
        if outcome is not CallOutcome.GEMINI_FAILED:  # a failure was written as `failed` already
            self.status(CallStatus.COMPLETED, outcome.value)

    def tool_call(self, call: ToolCallRecord) -> None:
        write = functools.partial(self._store.add_tool_call, self._call_id, call)
        self._ctx.write("tool call", write, key=f"tool-{call.tool_call_id}")

    def transferred(self, number: str) -> None:
        self.status(CallStatus.TRANSFERRED, f"to {number}")
        self._ctx.write(
            "transfer", lambda: self._store.update_call(self._call_id, self._ctx.clock(), transferred_to=number)
        )
