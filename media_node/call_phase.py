"""The phase of one call and how it ends, as a small state machine (the shape of h11's `_state.py`).

Every transition is listed in `_TRANSITIONS`; anything else is a bug and raises. The bridge asks this object
instead of keeping `ready` / `ending` / `closing` flags. `CallOutcome` is what metrics and logs report.
"""

from __future__ import annotations

import enum


class CallPhase(enum.Enum):
    AWAITING_START = "awaiting_start"  # socket open, no valid `start` yet: costs no call slot
    LIVE = "live"  # stream claimed, bridging
    SAYING_GOODBYE = "saying_goodbye"  # ending on purpose: the goodbye plays, then we hang up
    ENDED = "ended"  # tearing down; nothing new starts


class CallOutcome(enum.StrEnum):
    COMPLETED = "completed"  # the caller or Twilio ended it (stop, close)
    HUNG_UP_BY_AGENT = "hung_up_by_agent"  # the agent's end_call tool
    TRANSFERRED = "transferred"  # handed to a person (transfer_call)
    LIMIT = "limit"  # MAX_CALL_SECONDS, IDLE_TIMEOUT_SECONDS, or Twilio went silent
    GEMINI_FAILED = "gemini_failed"  # Gemini refused or could not be restored
    REFUSED = "refused"  # the stream was not admitted (bad token, replay, capacity, ...)
    ERROR = "error"  # a bug: logged with its traceback


class PhaseError(RuntimeError):
    """A transition the table does not allow: a bug in the caller."""


_TRANSITIONS: dict[CallPhase, frozenset[CallPhase]] = {
    CallPhase.AWAITING_START: frozenset({CallPhase.LIVE, CallPhase.ENDED}),
    CallPhase.LIVE: frozenset({CallPhase.SAYING_GOODBYE, CallPhase.ENDED}),
    CallPhase.SAYING_GOODBYE: frozenset({CallPhase.ENDED}),
    CallPhase.ENDED: frozenset(),
}


class CallLifecycle:
    """Phase and outcome of one call. The first `end()` decides the outcome; later ones change nothing."""

    def __init__(self) -> None:
        self.phase = CallPhase.AWAITING_START
        self.outcome: CallOutcome | None = None
        self.reason = ""

    def _to(self, phase: CallPhase) -> None:
        if phase not in _TRANSITIONS[self.phase]:
            raise PhaseError(f"{self.phase.value} -> {phase.value}")
        self.phase = phase

    def admitted(self) -> None:
        self._to(CallPhase.LIVE)

    def begin_goodbye(self, outcome: CallOutcome, reason: str) -> bool:
        """Start ending politely; False when the call is already ending (no second goodbye)."""
        if self.phase is not CallPhase.LIVE:
            return False
        self._to(CallPhase.SAYING_GOODBYE)
        self.outcome, self.reason = outcome, reason
        return True

    def end(self, outcome: CallOutcome, reason: str) -> bool:
        """The call is over. True the first time (the caller then tears down), False after."""
        if self.phase is CallPhase.ENDED:
            return False
        self._to(CallPhase.ENDED)
        if self.outcome is None:  # a goodbye already chose it: hanging up after it keeps that outcome
            self.outcome, self.reason = outcome, reason
        return True

    @property
    def live(self) -> bool:
        return self.phase is CallPhase.LIVE

    @property
    def ended(self) -> bool:
        return self.phase is CallPhase.ENDED
