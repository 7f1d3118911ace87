"""The call store interface, and `open_store()` which picks a backend from CALL_STORE.

Backends: `SqliteCallStore` (embedded default) and `DynamoCallStore` (AWS). Both pass one contract suite
(tests/test_store_contract.py). Methods are synchronous and thread-safe; asyncio code calls them through
`AsyncCallStore` (call_state/async_store.py) so no store call blocks the event loop.

Every read takes `now` and treats a record whose `expires_at` has passed as gone (TTL deletion is lazy).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from call_state.record import CallFigures, CallRecord, StatusEvent, StreamEvent, TranscriptTurn
from call_state.status_rules import StatusUpdate

MAX_PAGE_SIZE = 100


class CallExists(Exception):
    """create_call was given a call_id that is already stored."""


class CallNotFound(KeyError):
    """The call does not exist or has expired."""


class StreamAlreadyClaimed(Exception):
    """The call already has its media stream: a stream token is good for one stream, once."""


@dataclass(frozen=True)
class IdempotencyClaim:
    """Result of claiming an Idempotency-Key.

    `claimed` is True for the first request with this key: it must do the work and then `complete` it.
    Otherwise `body_hash` says whether the retry carries the same body, and `response` holds the first
    answer once it is complete (None while the first request is still in flight).
    """

    claimed: bool
    body_hash: str
    call_id: str
    response: dict[str, Any] | None


@dataclass(frozen=True)
class CallPage:
    calls: list[CallRecord]
    next_cursor: str | None


class CallStore(abc.ABC):
    """Where call records live. One class per backend; all methods are safe to call from threads."""

    @abc.abstractmethod
    def create_call(self, record: CallRecord) -> None:
        """Store a new record; raise CallExists if the call_id is taken."""

    @abc.abstractmethod
    def get_call(self, call_id: str, now: float) -> CallRecord | None:
        """The whole record (history, transcript, stream events), or None if missing or expired."""

    @abc.abstractmethod
    def list_calls(self, now: float, limit: int = 20, cursor: str | None = None) -> CallPage:
        """Calls newest first, without transcripts. `cursor` comes from a previous page."""

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
    ) -> None:
        """Set the given fields (None leaves a field alone). Raise CallNotFound."""

    @abc.abstractmethod
    def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        """Bind the call to its one media stream: a conditional write that succeeds only while the call has no
        stream yet, so of any number of concurrent claims exactly one wins. Raise CallNotFound (missing or
        expired) or StreamAlreadyClaimed (it has a stream already, this one or another)."""

    @abc.abstractmethod
    def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        """Append a transcript turn (turn.index orders them; writing the same index twice replaces it)."""

    @abc.abstractmethod
    def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        """Record a Media Streams status callback."""

    @abc.abstractmethod
    def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, now: float, ttl_seconds: int
    ) -> IdempotencyClaim:
        """Atomically claim `key` for a request (conditional write), or report who holds it."""

    @abc.abstractmethod
    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        """Store the answer of the request that claimed `key`, for its retries."""

    @abc.abstractmethod
    def release_idempotency_key(self, key: str) -> None:
        """Forget a claim whose request failed before doing anything, so a retry may try again."""

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
