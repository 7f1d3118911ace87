"""The status rules, proven over every delivery order Twilio could produce."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from call_state.record import CallStatus, StatusEvent
from call_state.status_rules import apply_status, parse_twilio_status

LIFECYCLE = [CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING, CallStatus.IN_PROGRESS]
TERMINALS = [CallStatus.COMPLETED, CallStatus.BUSY, CallStatus.NO_ANSWER, CallStatus.FAILED, CallStatus.CANCELED]


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[StatusEvent], CallStatus]:
    """A real call's events (a lifecycle prefix + one terminal), shuffled, with duplicates."""
    reached = draw(st.integers(min_value=0, max_value=len(LIFECYCLE)))
    terminal = draw(st.sampled_from(TERMINALS))
    events = [StatusEvent(s, 100.0 + i, i) for i, s in enumerate([*LIFECYCLE[:reached], terminal])]
    dupes = draw(st.lists(st.sampled_from(events), max_size=6))
    return draw(st.permutations(events + dupes)), terminal


@given(deliveries())
def test_status_never_regresses_and_history_keeps_each_event_once(case: tuple[list[StatusEvent], CallStatus]) -> None:
    delivered, terminal = case
    status, history = CallStatus.CREATED, ()
    for event in delivered:
        update = apply_status(status, history, event)
        assert update.status.rank >= status.rank  # never regresses
        if status.is_terminal:
            assert update.status is status  # a terminal status is final
        status, history = update.status, update.history
    assert status is terminal
    distinct = {e.status for e in delivered}
    assert [e.status for e in history] == sorted(distinct, key=lambda s: s.rank)
    assert len(history) == len(distinct)


@given(st.permutations(TERMINALS))
def test_first_terminal_wins(order: list[CallStatus]) -> None:
    status, history = CallStatus.IN_PROGRESS, ()
    for i, s in enumerate(order):
        update = apply_status(status, history, StatusEvent(s, float(i), None))
        status, history = update.status, update.history
    assert status is order[0]
    assert [e.status for e in history] == order  # same rank: kept in arrival order


def test_duplicate_is_a_no_op() -> None:
    first = apply_status(CallStatus.CREATED, (), StatusEvent(CallStatus.RINGING, 1.0, 2))
    again = apply_status(first.status, first.history, StatusEvent(CallStatus.RINGING, 5.0, 2))
    assert (again.status_changed, again.history_changed) == (False, False)
    assert again.history == first.history


def test_parse_twilio_status() -> None:
    assert parse_twilio_status("in-progress") is CallStatus.IN_PROGRESS
    assert parse_twilio_status(" Completed ") is CallStatus.COMPLETED
    assert parse_twilio_status("answered") is None
    assert parse_twilio_status("created") is None  # ours, never Twilio's
    assert parse_twilio_status("") is None
