"""The end-of-call webhook's rules, without I/O: its jobs on the wire, what a due job does, the retry schedule."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from call_state.agent_actions import CallActions
from call_state.record import Recording
from call_state.webhook_jobs import (
    GIVE_UP_AFTER_S,
    MEDIA_GRACE_S,
    RECORDING_WAIT_S,
    JobKind,
    Step,
    WebhookJob,
    after_attempt,
    body,
    deadline_job,
    deliver_job,
    event_id_for,
    next_step,
)
from tests.test_store_contract import NOW, make_record

HOOKED = make_record().with_changes(actions=CallActions(webhook_url="https://crm.example.com/events"))


def test_event_id_is_one_per_call_and_stable() -> None:
    assert event_id_for("c_1") == event_id_for("c_1") == deliver_job("c_1", NOW).event_id
    assert deadline_job("c_1", NOW).event_id == event_id_for("c_1") != event_id_for("c_2")
    assert event_id_for("c_1").startswith("evt_") and len(event_id_for("c_1")) == 36


def test_jobs_round_trip_and_anything_else_is_refused() -> None:
    for job in (deliver_job("c_1", NOW), deadline_job("c_1", NOW)):
        assert WebhookJob.from_json(job.to_json()) == job
    assert deadline_job("c_1", NOW).first_due_at == NOW + MEDIA_GRACE_S
    for bad in ("", "null", "[]", "{}", '{"call_id": "c", "kind": "deliver"}',
                '{"call_id": 1, "kind": "deliver", "first_due_at": 1}',
                '{"call_id": "c", "kind": "resend", "first_due_at": 1}',
                '{"call_id": "c", "kind": "deliver", "first_due_at": true}',
                '{"call_id": "c", "kind": "deliver", "first_due_at": 1e300}',
                json.dumps({"call_id": "c" * 129, "kind": "deliver", "first_due_at": 1}), None, 42):  # fmt: skip
        with pytest.raises(ValueError):
            WebhookJob.from_json(bad)


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300), st.none(), st.integers()))
def test_job_parser_never_raises_anything_but_value_error(text: object) -> None:
    try:
        WebhookJob.from_json(text)
    except ValueError:
        pass


def test_what_a_due_job_does() -> None:
    deliver, deadline = deliver_job(HOOKED.call_id, NOW), deadline_job(HOOKED.call_id, NOW)
    assert next_step(deliver, None, NOW).step is Step.DROP  # the call is gone
    assert next_step(deliver, make_record(), NOW).step is Step.DROP  # no webhook_url
    assert next_step(deliver, HOOKED, NOW).step is Step.SEND
    assert next_step(deadline, HOOKED, NOW + MEDIA_GRACE_S).step is Step.SEND  # nobody tried: the safety net sends
    retrying = HOOKED.with_changes(webhook={"state": "retrying", "attempts": 1})
    assert next_step(deliver, retrying, NOW).step is Step.SEND  # its own retry
    assert next_step(deadline, retrying, NOW).step is Step.DROP  # the deliver job owns it
    delivered, failed = (HOOKED.with_changes(webhook={"state": s}) for s in ("delivered", "failed"))
    assert next_step(deliver, delivered, NOW).step is next_step(deadline, delivered, NOW).step is Step.DROP
    assert next_step(deliver, failed, NOW).step is Step.SEND  # moved back from the dead-letter queue: once more
    assert next_step(deadline, failed, NOW).step is Step.DROP


def test_a_recorded_call_waits_a_little_for_its_recording() -> None:
    recorded = HOOKED.with_changes(actions=CallActions(record=True, webhook_url="https://crm.example.com/e"))
    job = deliver_job(recorded.call_id, NOW)
    waiting = next_step(job, recorded, NOW + 1)
    assert waiting.step is Step.WAIT and waiting.at == NOW + 2  # looks again in a second
    assert next_step(job, recorded, NOW + RECORDING_WAIT_S - 0.5).at == NOW + RECORDING_WAIT_S
    assert next_step(job, recorded, NOW + RECORDING_WAIT_S).step is Step.SEND  # then without it
    with_it = recorded.with_changes(recording=Recording("RE" + "1" * 32, "https://api.twilio.com/x", 3.0))
    assert next_step(job, with_it, NOW + 1).step is Step.SEND


def test_the_body_is_the_call_as_the_api_shows_it() -> None:
    sent = body(HOOKED)
    assert sent == {"event": "call.ended", "event_id": event_id_for(HOOKED.call_id), "call": HOOKED.to_dict()}
    json.dumps(sent, allow_nan=False)


def test_retries_start_fast_then_back_off_for_at_least_a_day() -> None:
    job, state, now, times = deliver_job("c_1", NOW), {}, NOW, []
    while True:
        outcome = after_attempt(job, state, now, delivered=False, status=500, error="HTTP 500")
        times.append(now)
        state = outcome.state
        if outcome.retry_in is None:
            break
        now += outcome.retry_in
    assert times[1] - times[0] <= 60  # the first retry within a minute
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps == sorted(gaps) and max(gaps) <= 2 * 3600  # backing off, never more than 2 h between attempts
    assert times[-1] - job.first_due_at >= GIVE_UP_AFTER_S >= 24 * 3600  # retried for at least a day
    assert state["state"] == "failed" and state["attempts"] == len(times) and len(times) < 30
    assert state["event_id"] == event_id_for("c_1") and state["last_status"] == 500


def test_a_2xx_ends_it_and_attempts_count_per_event() -> None:
    job = deliver_job("c_1", NOW)
    first = after_attempt(job, {}, NOW, delivered=False, status=None, error="no answer within 10 s")
    assert first.state["state"] == "retrying" and first.state["next_attempt_at"] == NOW + first.retry_in
    second = after_attempt(job, first.state, NOW + 10, delivered=True, status=204, error="")
    assert second.retry_in is None and not second.gave_up
    assert second.state["state"] == "delivered" and second.state["attempts"] == 2
    assert second.state["delivered_at"] == NOW + 10
    other = after_attempt(deliver_job("c_2", NOW), first.state, NOW, delivered=True, status=200, error="")
    assert other.state["attempts"] == 1  # another call's state does not count
    assert JobKind("deadline") is JobKind.DEADLINE
