"""How a call's status moves, as a pure function.

Twilio delivers status callbacks out of order and more than once. The rules:
- a status happens at most once in a call's life: a second report of it is a no-op;
- the current status only moves forward in `created < queued < initiated < ringing < in-progress < terminal`;
- the first terminal status is final (a late `completed` after our own `failed` does not overwrite it);
- a late event that cannot move the status still enters the history, so it records every distinct event once,
  ordered by rank, then time, then Twilio's SequenceNumber.
"""

from __future__ import annotations

from dataclasses import dataclass

from call_state.record import CallStatus, StatusEvent


@dataclass(frozen=True)
class StatusUpdate:
    status: CallStatus
    history: tuple[StatusEvent, ...]
    status_changed: bool
    history_changed: bool


def history_order(event: StatusEvent) -> tuple[int, float, int]:
    """Rank first (callbacks arrive out of order); within a rank (terminal statuses), time of arrival."""
    seq = -1 if event.sequence is None else event.sequence
    return (event.status.rank, event.at, seq)


def apply_status(current: CallStatus, history: tuple[StatusEvent, ...], event: StatusEvent) -> StatusUpdate:
    """Fold one reported event into (status, history). Never raises, never regresses."""
    if any(e.status == event.status for e in history):
        return StatusUpdate(current, history, status_changed=False, history_changed=False)
    new_history = tuple(sorted((*history, event), key=history_order))
    moves = not current.is_terminal and event.status.rank > current.rank
    return StatusUpdate(
        status=event.status if moves else current,
        history=new_history,
        status_changed=moves,
        history_changed=True,
    )


def parse_twilio_status(value: str) -> CallStatus | None:
    """Twilio's CallStatus form value, or None for values we do not track (e.g. 'answered')."""
    try:
        status = CallStatus(value.strip().lower())
    except ValueError:
        return None
    return None if status is CallStatus.CREATED else status
