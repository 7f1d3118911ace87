"""How a CallRecord is split for storage: the small "head" (everything but the growing lists) and the parts.

Both backends store the head as one JSON document and each status event, transcript turn, stream event and tool
call as its own row/item, so an hour-long transcript never grows one item toward DynamoDB's 400 KB limit. Cursors for
`list_calls` are opaque base64 of (created_at, call_id).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from call_state.record import CallRecord, StatusEvent, StreamEvent, ToolCallRecord, TranscriptTurn

_PARTS = ("status_history", "transcript", "stream_events", "tool_calls")
# Fields each backend keeps outside the head, in their own column/attribute, so a conditional write can test them.
_COLUMNS = ("status", "stream_sid", "media_node")


def record_head(record: CallRecord) -> dict[str, Any]:
    head = record.to_dict()
    for key in _PARTS + _COLUMNS:
        head.pop(key)
    return head


HEAD_FIELDS = frozenset({"call_sid", "error", "figures", "transferred_to", "answered_by", "recording", "webhook"})


def head_changes(**fields: Any) -> dict[str, Any]:
    """The head fields `update_call` sets, as stored: those given (None leaves a field alone)."""
    unknown = set(fields) - HEAD_FIELDS
    if unknown:
        raise TypeError(f"update_call() got unexpected fields {sorted(unknown)}")
    return {
        name: value.to_dict() if hasattr(value, "to_dict") else value
        for name, value in fields.items()
        if value is not None
    }


def record_from_parts(
    head: dict[str, Any],
    history: list[StatusEvent],
    turns: list[TranscriptTurn],
    stream_events: list[StreamEvent],
    tool_calls: list[ToolCallRecord] | None = None,
) -> CallRecord:
    record = CallRecord.from_dict({**head, **{part: [] for part in _PARTS}})
    return record.with_changes(
        status_history=tuple(history),
        transcript=tuple(sorted(turns, key=lambda t: t.index)),
        stream_events=tuple(sorted(stream_events, key=lambda e: e.at)),
        tool_calls=tuple(sorted(tool_calls or [], key=lambda c: c.at)),
    )


def encode_cursor(created_at: float, call_id: str) -> str:
    raw = json.dumps([created_at, call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """Raise ValueError for anything that is not a cursor we made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, call_id = json.loads(raw)
        return float(created_at), str(call_id)
    except (ValueError, TypeError) as exc:
        raise ValueError("invalid cursor") from exc
