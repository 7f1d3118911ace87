"""The call store interface, and `open_store()` which picks a backend from CALL_STORE.

Backends: `SqliteCallStore` (embedded default) and `DynamoCallStore` (AWS). Both pass one contract suite
(tests/test_store_contract.py). Methods are synchronous and thread-safe; asyncio code calls them through
`AsyncCallStore` (call_state/async_store.py) so no store call blocks the event loop.

Every read takes `now` and treats a row whose `expires_at` has passed as gone (TTL deletion is lazy; SQLite also
deletes them in `sweep_expired`). Besides call records the store keeps what the control plane coordinates on
across processes and Lambda instances: Idempotency-Key claims, per-key pacing windows and media-node heartbeats;
and the end of each call: which of its two sides (Twilio's terminal status, the media node's last writes) have
reported, and the jobs of the end-of-call webhook when the store is the outbox (the all-in-one server).
"""

from __future__ import annotations

import abc
import enum
import sys
from dataclasses import dataclass
from typing import Any, Protocol

from call_state.nodes import NodeHeartbeat
from call_state.record import (
    CallFigures,
    CallRecord,
    Recording,
    StatusEvent,
    StreamEvent,
    ToolCallRecord,
    TranscriptTurn,
)
from call_state.status_rules import StatusUpdate
from call_state.webhook_jobs import WebhookJob

MAX_PAGE_SIZE = 100


class CallExists(Exception):
    """create_call was given a call_id that is already stored."""


class CallNotFound(KeyError):
    """The call does not exist or has expired."""


class StreamAlreadyClaimed(Exception):
    """The call already has its media stream: a stream token is good for one stream, once."""


class NoCapacity(Exception):
    """create_call(max_live=N) found N live calls already: the media plane has no slot for another."""


class IdemState(enum.StrEnum):
    CLAIMED = "claimed"  # a request holds the key (under a lease) and has not dialled
    DIALLING = "dialling"  # it is about to ask Twilio, or did: never dial again for this key
    DONE = "done"  # the answer is stored in `response`


@dataclass(frozen=True)
class IdempotencyClaim:
    """Result of claiming an Idempotency-Key.

    `claimed` is True when this request now holds the key: it must do the work (and `mark_idempotency_dialling`
    before it dials). That is the first request, or a retry taking over a claim whose holder died before dialling
    (its lease ran out): `call_id` is then the stored one. Otherwise the fields describe the holder's progress.
    """

    claimed: bool
    body_hash: str
    call_id: str
    response: dict[str, Any] | None
    state: IdemState = IdemState.CLAIMED
    lease_until: float = 0.0
    holder: str = ""


class Coordination(Protocol):
    """The control plane's coordination methods of one backend (keys, pacing windows, heartbeats); `CallStore`
    exposes them under the same names and documents them."""

    def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, holder: str, now: float, ttl_seconds: int, lease_seconds: float
    ) -> IdempotencyClaim: ...

    def mark_idempotency_dialling(self, key: str, holder: str, now: float) -> bool: ...

    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None: ...

    def release_idempotency_key(self, key: str, holder: str) -> None: ...

    def take_rate_slot(self, key: str, window: int, limit: int, expires_at: int) -> bool: ...

    def put_node_heartbeat(self, heartbeat: NodeHeartbeat, ttl_seconds: int) -> None: ...

    def node_heartbeats(self, now: float) -> list[NodeHeartbeat]: ...


class CallEndStore(Protocol):
    """The end of a call and the webhook outbox, of one backend; `CallStore` exposes them under the same names and
    documents them."""

    def media_done(self, call_id: str, now: float) -> bool: ...

    def status_done(self, call_id: str, now: float) -> bool: ...

    def add_webhook_job(self, job: WebhookJob, expires_at: int) -> None: ...

    def claim_webhook_jobs(self, now: float, lease_s: float, limit: int) -> list[WebhookJob]: ...

    def reschedule_webhook_job(self, job: WebhookJob, due_at: float) -> None: ...

    def remove_webhook_job(self, job: WebhookJob) -> None: ...


@dataclass(frozen=True)
class CallPage:
    calls: list[CallRecord]
    next_cursor: str | None


class CallStore(abc.ABC):
    """Where call records live. One class per backend; all methods are safe to call from threads."""

    # --- call records

    @abc.abstractmethod
    def create_call(self, record: CallRecord, *, max_live: int | None = None, live_since: float = 0.0) -> None:
        """Store a new record; raise CallExists if the call_id is taken. With `max_live`, raise NoCapacity instead
        when that many live calls (not terminal, created after `live_since`, not expired) are stored already
        (SQLite checks and inserts in one transaction; DynamoDB counts, then writes)."""

    @abc.abstractmethod
    def get_call(self, call_id: str, now: float) -> CallRecord | None:
        """The whole record (history, transcript, stream events), or None if missing or expired."""

    @abc.abstractmethod
    def list_calls(self, now: float, limit: int = 20, cursor: str | None = None) -> CallPage:
        """Calls newest first, without transcripts. `cursor` comes from a previous page."""

    @abc.abstractmethod
    def count_live_calls(self, since: float, now: float) -> int:
        """Calls created after `since` whose status is not terminal (and not expired)."""

    @abc.abstractmethod
    def apply_status(self, call_id: str, event: StatusEvent, now: float) -> StatusUpdate:
        """Fold a status event in with call_state.status_rules, atomically. Raise CallNotFound."""

    @abc.abstractmethod
    def update_call(
        self,
        call_id: str,
        now: float,
        *,
        call_sid: str | None = None,
        error: str | None = None,
        figures: CallFigures | None = None,
        transferred_to: str | None = None,
        answered_by: str | None = None,
        recording: Recording | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> None:
        """Set the given fields of the record's head (None leaves a field alone). Raise CallNotFound.
        Backends take `**fields` and pass them to store_codec.head_changes, which knows them all."""

    @abc.abstractmethod
    def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        """Bind the call to its one media stream: a conditional write that succeeds only while the call has no
        stream yet, so of any number of concurrent claims exactly one wins. Raise CallNotFound (missing or
        expired) or StreamAlreadyClaimed (it has a stream already, this one or another)."""

    @abc.abstractmethod
    def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        """Append a transcript turn (turn.index orders them; writing the same index twice replaces it).
        Raise CallNotFound (nothing is stored for an unknown call)."""

    @abc.abstractmethod
    def add_tool_call(self, call_id: str, call: ToolCallRecord) -> None:
        """Record one of the agent's function calls (writing the same tool_call_id again replaces it).
        Raise CallNotFound."""

    @abc.abstractmethod
    def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        """Record a Media Streams status callback. Raise CallNotFound (nothing is stored for an unknown call)."""

    # --- coordination: each backend sets `self.coordination` (one object per backend, see `Coordination`)

    coordination: Coordination

    def claim_idempotency_key(
        self,
        key: str,
        body_hash: str,
        call_id: str,
        holder: str,
        now: float,
        ttl_seconds: int,
        lease_seconds: float,
    ) -> IdempotencyClaim:
        """Atomically claim `key` for `holder` (conditional write), taking over a `claimed` key with the same
        body whose lease has run out; or report who holds it."""
        return self.coordination.claim_idempotency_key(key, body_hash, call_id, holder, now, ttl_seconds, lease_seconds)

    def mark_idempotency_dialling(self, key: str, holder: str, now: float) -> bool:
        """Move the key from claimed to dialling if `holder` still holds it. False: another request took it
        over (this one must not dial)."""
        return self.coordination.mark_idempotency_dialling(key, holder, now)

    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        """Store the answer of the request that claimed `key`, for its retries."""
        self.coordination.complete_idempotency_key(key, response)

    def release_idempotency_key(self, key: str, holder: str) -> None:
        """Forget `holder`'s claim (nothing was dialled), so a retry may try at once. No-op once answered or when
        another holder has taken the key over."""
        self.coordination.release_idempotency_key(key, holder)

    def take_rate_slot(self, key: str, window: int, limit: int, expires_at: int) -> bool:
        """Count one request for `key` in time window `window` (e.g. the minute number) if fewer than `limit` are
        counted already, atomically across processes. False: the window is full."""
        return self.coordination.take_rate_slot(key, window, limit, expires_at)

    def put_node_heartbeat(self, heartbeat: NodeHeartbeat, ttl_seconds: int) -> None:
        """Write (replace) a media node's heartbeat; it is fresh until `heartbeat.at + ttl_seconds`."""
        self.coordination.put_node_heartbeat(heartbeat, ttl_seconds)

    def node_heartbeats(self, now: float) -> list[NodeHeartbeat]:
        """The fresh heartbeats of every node, in node_id order."""
        return self.coordination.node_heartbeats(now)

    # --- the end of a call (each backend sets `self.call_end`, see `CallEndStore`)

    call_end: CallEndStore

    def media_done(self, call_id: str, now: float) -> bool:
        """The media node wrote the call's last turns and figures. True to the one caller that completed the pair
        (Twilio's terminal status came first): it queues the end-of-call webhook. Raise CallNotFound."""
        return self.call_end.media_done(call_id, now)

    def status_done(self, call_id: str, now: float) -> bool:
        """Twilio reported a terminal status. True to the one caller that completed the pair (the media side was
        done, or the call never had a stream). Like media_done a conditional write: each side marks itself, then
        completes the pair only if the other is marked and nobody did yet; of any concurrent or replayed calls
        exactly one gets True. Raise CallNotFound."""
        return self.call_end.status_done(call_id, now)

    def add_webhook_job(self, job: WebhookJob, expires_at: int) -> None:
        """Queue a webhook job, due at `job.first_due_at` (the store as outbox). A job of the same call and kind
        already queued stays as it is."""
        self.call_end.add_webhook_job(job, expires_at)

    def claim_webhook_jobs(self, now: float, lease_s: float, limit: int) -> list[WebhookJob]:
        """Up to `limit` due jobs nobody holds, oldest due first, each leased to the caller for `lease_s`."""
        return self.call_end.claim_webhook_jobs(now, lease_s, limit)

    def reschedule_webhook_job(self, job: WebhookJob, due_at: float) -> None:
        """Due again at `due_at`, lease released."""
        self.call_end.reschedule_webhook_job(job, due_at)

    def remove_webhook_job(self, job: WebhookJob) -> None:
        """The job is finished (delivered, given up, or nothing to send)."""
        self.call_end.remove_webhook_job(job)

    # --- housekeeping

    @abc.abstractmethod
    def sweep_expired(self, now: float) -> int:
        """Delete expired rows (calls with their turns, events; keys, windows, heartbeats); return how many.
        Backends with their own TTL (DynamoDB) may return 0."""

    def check_writable(self, now: float) -> None:  # noqa: B027 - optional hook
        """Raise if the store cannot be written (start-up probe). Backends that would pay a network round trip
        for it may skip it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (optional)."""


def open_store(url: str, *, dynamodb_endpoint_url: str | None = None, region: str | None = None) -> CallStore:
    """Build the store named by CALL_STORE: `sqlite:///path/calls.db` or `dynamodb://TABLE_NAME`."""
    if url.startswith("sqlite:///"):
        from call_state.sqlite_store import SqliteCallStore

        return SqliteCallStore(url.removeprefix("sqlite:///"))
    if url.startswith("dynamodb://"):
        from call_state.dynamo_store import DynamoCallStore

        return DynamoCallStore.from_table_name(
            url.removeprefix("dynamodb://"), endpoint_url=dynamodb_endpoint_url, region=region
        )
    raise ValueError("CALL_STORE must be sqlite:///path or dynamodb://TABLE_NAME")


def open_store_or_exit(url: str, now: float, *, dynamodb_endpoint_url: str = "", region: str = "") -> CallStore:
    """For entry points: the store, opened and probed with a write; else one line naming CALL_STORE, exit 2."""
    try:
        store = open_store(url, dynamodb_endpoint_url=dynamodb_endpoint_url or None, region=region or None)
        store.check_writable(now)
    except Exception as exc:  # any reason (permissions, a read-only disk, a corrupt file) is the same for the user
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        print(f"config error: CALL_STORE {url!r} cannot be opened or written: {reason}", file=sys.stderr)
        raise SystemExit(2) from None
    return store
