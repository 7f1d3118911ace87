"""The end-of-call webhook as data and rules, no I/O: its jobs, its body, its retry schedule, what the record shows.

A call's webhook is sent by *jobs* that wait in an outbox (the store's on the all-in-one server, SQS on AWS):

- a `deliver` job, queued by whoever completes the pair "Twilio's terminal status AND the media node's last
  writes" (call_state/call_end.py): it owns the delivery and retries it;
- a `deadline` job, queued when Twilio reports the terminal status, due `MEDIA_GRACE_S` later: a safety net for a
  media side that never reports (the node crashed mid-call) or a completer that died before queuing. It sends only
  if no attempt has been made by then.

`next_step()` decides what a due job does with the record as it is now; `after_attempt()` what an attempt's result
means (done, retry in N s, or give up after `GIVE_UP_AFTER_S`). The record's `webhook` field is the delivery
state users see in `GET /calls/{id}`: `{event_id, job: deliver | deadline, state: retrying | delivered | failed,
attempts, last_attempt_at, last_status, last_error, next_attempt_at, delivered_at}` (empty until the first attempt).
`job` is the job that made the last attempt: a deadline job keeps retrying its own attempts and leaves the rest to the
deliver job, which takes over whatever state it finds.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from call_state.record import CallRecord

EVENT = "call.ended"
MEDIA_GRACE_S = 120.0  # the media side's last writes are due seconds after the end; past this, send without them
RECORDING_WAIT_S = 8.0  # with `record`, the first attempt waits this long for Twilio's recording callback
WAIT_POLL_S = 1.0  # ... looking again every second, so it goes out soon after the recording arrives
RETRY_DELAYS_S = (10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0)  # after attempt 1, 2, ...; then the last again
GIVE_UP_AFTER_S = 24 * 3600.0  # keep retrying for at least this long after the first attempt was due
TIMEOUT_S = 10.0  # per attempt: resolving, connecting, sending and reading (call_state.outbound)


class JobKind(enum.StrEnum):
    DELIVER = "deliver"
    DEADLINE = "deadline"


class State(enum.StrEnum):
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after GIVE_UP_AFTER_S (on AWS the message also goes to the dead-letter queue)


def event_id_for(call_id: str) -> str:
    """The same id for every job and every retry of one call's webhook (receivers dedupe on it)."""
    return "evt_" + hashlib.sha256(f"{EVENT}\x00{call_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WebhookJob:
    call_id: str
    kind: JobKind
    first_due_at: float  # when it was first due: the 24 h of retries count from here

    @property
    def event_id(self) -> str:
        return event_id_for(self.call_id)

    @property
    def key(self) -> str:
        """One job of each kind per call (a replayed callback queues nothing new in the store's outbox)."""
        return f"{self.call_id}#{self.kind.value}"

    def to_json(self) -> str:
        return json.dumps({"call_id": self.call_id, "kind": self.kind.value, "first_due_at": self.first_due_at})

    @classmethod
    def from_json(cls, text: object) -> WebhookJob:
        """Raise ValueError for anything that is not a job we wrote (an SQS message body, a stored row)."""
        try:
            data = json.loads(text) if isinstance(text, str | bytes) else None
            call_id, first_due_at = data["call_id"], data["first_due_at"]  # type: ignore[index]
            kind = JobKind(data["kind"])  # type: ignore[index]
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a webhook job ({type(exc).__name__})") from None
        if not isinstance(call_id, str) or not 0 < len(call_id) <= 128 or isinstance(first_due_at, bool):
            raise ValueError("not a webhook job (call_id)")
        if not isinstance(first_due_at, int | float) or not 0 <= first_due_at < 1e11:
            raise ValueError("not a webhook job (first_due_at)")
        return cls(call_id, kind, float(first_due_at))


class Step(enum.Enum):
    DROP = "drop"  # nothing (more) to send for this job
    WAIT = "wait"  # not yet: come back at `at` (no attempt is counted)
    SEND = "send"


@dataclass(frozen=True)
class Next:
    step: Step
    why: str = ""
    at: float = 0.0


def next_step(job: WebhookJob, record: CallRecord | None, now: float) -> Next:
    """What a due job does now, given the call's record (None: unknown or expired)."""
    if record is None:
        return Next(Step.DROP, "the call is gone")
    if not record.actions.webhook_url:
        return Next(Step.DROP, "the call has no webhook_url")
    state = record.webhook.get("state")
    if state == State.DELIVERED:
        return Next(Step.DROP, "already delivered")
    if job.kind is JobKind.DEADLINE and state and record.webhook.get("job") != JobKind.DEADLINE:
        return Next(Step.DROP, "the deliver job has it")  # the net retries only what it started itself
    # A deliver job of a `failed` webhook is one moved back from the dead-letter queue: it gets one more attempt.
    wait_until = job.first_due_at + RECORDING_WAIT_S
    if record.actions.record and record.recording is None and not state and now < wait_until:
        return Next(Step.WAIT, "waiting for the recording", min(wait_until, now + WAIT_POLL_S))
    return Next(Step.SEND)


def body(record: CallRecord) -> dict[str, Any]:
    """What is POSTed: the event, its id, and the call exactly as GET /calls/{id} shows it now."""
    return {"event": EVENT, "event_id": event_id_for(record.call_id), "call": record.to_dict()}


def retry_delay(attempts: int) -> float:
    """Seconds from failed attempt number `attempts` (1, 2, ...) to the next one."""
    return RETRY_DELAYS_S[min(max(attempts, 1), len(RETRY_DELAYS_S)) - 1]


@dataclass(frozen=True)
class Outcome:
    state: dict[str, Any]  # the record's new `webhook` field
    retry_in: float | None  # None: this job is finished (delivered, or given up)

    @property
    def gave_up(self) -> bool:
        return self.state.get("state") == State.FAILED


def after_attempt(
    job: WebhookJob, previous: dict[str, Any], now: float, *, delivered: bool, status: int | None, error: str
) -> Outcome:
    """The delivery state after one attempt, and when the next one is due."""
    attempts = int(previous.get("attempts", 0)) + 1 if previous.get("event_id") == job.event_id else 1
    state: dict[str, Any] = {"event_id": job.event_id, "job": job.kind.value, "attempts": attempts,
                             "last_attempt_at": now, "last_status": status, "last_error": error[:200]}  # fmt: skip
    if delivered:
        return Outcome({**state, "state": State.DELIVERED.value, "delivered_at": now}, None)
    if now - job.first_due_at >= GIVE_UP_AFTER_S:
        return Outcome({**state, "state": State.FAILED.value}, None)
    delay = retry_delay(attempts)
    return Outcome({**state, "state": State.RETRYING.value, "next_attempt_at": now + delay}, delay)


def deliver_job(call_id: str, now: float) -> WebhookJob:
    return WebhookJob(call_id, JobKind.DELIVER, now)


def deadline_job(call_id: str, now: float) -> WebhookJob:
    return WebhookJob(call_id, JobKind.DEADLINE, now + MEDIA_GRACE_S)
