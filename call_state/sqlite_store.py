"""The embedded call store: one SQLite file in WAL mode, for a laptop or a VPS (two processes during an upgrade).

The connection, its lock and the one transaction helper live in `SqliteDb` (call_state/sqlite_db.py); keys,
pacing windows and node heartbeats in `SqliteCoordination`; the end of a call and the webhook outbox in
`SqliteCallEnd`. Status updates read and write inside one IMMEDIATE transaction, so concurrent callbacks (from
threads or from another process) cannot lose an event.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from call_state.record import (
    TERMINAL_STATUSES,
    CallRecord,
    CallStatus,
    StatusEvent,
    StreamEvent,
    ToolCallRecord,
    TranscriptTurn,
)
from call_state.sqlite_call_end import CALL_END_SCHEMA, SqliteCallEnd
from call_state.sqlite_coordination import COORDINATION_SCHEMA, SqliteCoordination
from call_state.sqlite_db import Connect, SqliteDb
from call_state.status_rules import StatusUpdate, apply_status, history_order
from call_state.store import (
    MAX_PAGE_SIZE,
    CallExists,
    CallNotFound,
    CallPage,
    CallStore,
    NoCapacity,
    StreamAlreadyClaimed,
)
from call_state.store_codec import decode_cursor, encode_cursor, head_changes, record_from_parts, record_head

# The same literal in the partial index and in the query, so SQLite uses the index to count live calls.
_NOT_TERMINAL = "status NOT IN ({})".format(", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES)))
_LIVE = f"SELECT count(*) FROM calls WHERE {_NOT_TERMINAL} AND created_at > ? AND expires_at > ?"  # noqa: S608 - constants
SWEEP_BATCH = 500  # calls deleted per transaction: the write lock is held for milliseconds, not for the sweep
SWEEP_BATCHES = 4  # per sweep_expired() call, so one call never holds the store's worker thread for long

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, created_at REAL NOT NULL, expires_at INTEGER NOT NULL,
    status TEXT NOT NULL, head TEXT NOT NULL, stream_sid TEXT, media_node TEXT);
CREATE INDEX IF NOT EXISTS calls_by_created ON calls (created_at DESC, call_id DESC);
CREATE INDEX IF NOT EXISTS calls_live ON calls (created_at) WHERE {_NOT_TERMINAL};
CREATE INDEX IF NOT EXISTS calls_by_expiry ON calls (expires_at);
CREATE TABLE IF NOT EXISTS status_events (
    call_id TEXT NOT NULL, status TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (call_id, status));
CREATE TABLE IF NOT EXISTS turns (
    call_id TEXT NOT NULL, idx INTEGER NOT NULL, turn TEXT NOT NULL, PRIMARY KEY (call_id, idx));
CREATE TABLE IF NOT EXISTS stream_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_events_by_call ON stream_events (call_id);
CREATE TABLE IF NOT EXISTS tool_calls (
    call_id TEXT NOT NULL, tool_call_id TEXT NOT NULL, call TEXT NOT NULL, PRIMARY KEY (call_id, tool_call_id));
CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_CHILDREN = ("status_events", "turns", "stream_events", "tool_calls", "webhook_jobs")


class SqliteCallStore(CallStore):
    def __init__(self, path: str, *, connect: Connect = sqlite3.connect) -> None:
        self._db = SqliteDb(path, _SCHEMA + COORDINATION_SCHEMA + CALL_END_SCHEMA, connect=connect)
        columns = self._db.columns("calls")
        for column in ("stream_sid", "media_node"):  # files written by 0.1 lack them
            if column not in columns:
                self._db.execute(f"ALTER TABLE calls ADD COLUMN {column} TEXT")
        self.coordination: SqliteCoordination = SqliteCoordination(self._db)
        self.call_end: SqliteCallEnd = SqliteCallEnd(self._db)

    # --- call records

    def create_call(self, record: CallRecord, *, max_live: int | None = None, live_since: float = 0.0) -> None:
        head = json.dumps(record_head(record))
        events = [(record.call_id, e.status.value, json.dumps(e.to_dict())) for e in record.status_history]
        try:
            with self._db.write() as db:
                live = db.execute(_LIVE, (live_since, record.created_at)).fetchone()[0] if max_live else 0
                if max_live is not None and live >= max_live:
                    raise NoCapacity(f"{max_live} live calls")
                db.execute(
                    "INSERT INTO calls (call_id, created_at, expires_at, status, head) VALUES (?, ?, ?, ?, ?)",
                    (record.call_id, record.created_at, record.expires_at, record.status.value, head),
                )
                db.executemany("INSERT OR IGNORE INTO status_events VALUES (?, ?, ?)", events)
        except sqlite3.IntegrityError as exc:
            raise CallExists(record.call_id) from exc

    def count_live_calls(self, since: float, now: float) -> int:
        return int(self._db.read(_LIVE, (since, now))[0][0])

    @staticmethod
    def _head_of(row: tuple[Any, ...]) -> dict[str, Any]:
        head: dict[str, Any] = json.loads(row[0])
        head.update(status=row[1], stream_sid=row[2], media_node=row[3])
        return head

    def _head(self, call_id: str, now: float) -> dict[str, Any] | None:
        rows = self._db.read(
            "SELECT head, status, coalesce(stream_sid, ''), coalesce(media_node, '') FROM calls "
            "WHERE call_id = ? AND expires_at > ?",
            (call_id, now),
        )
        return self._head_of(rows[0]) if rows else None

    def get_call(self, call_id: str, now: float) -> CallRecord | None:
        head = self._head(call_id, now)
        if head is None:
            return None
        history = [
            StatusEvent.from_dict(json.loads(r[0]))
            for r in self._db.read("SELECT event FROM status_events WHERE call_id = ?", (call_id,))
        ]
        history.sort(key=history_order)
        turns = [
            TranscriptTurn.from_dict(json.loads(r[0]))
            for r in self._db.read("SELECT turn FROM turns WHERE call_id = ? ORDER BY idx", (call_id,))
        ]
        streams = [
            StreamEvent.from_dict(json.loads(r[0]))
            for r in self._db.read("SELECT event FROM stream_events WHERE call_id = ? ORDER BY id", (call_id,))
        ]
        tools = [
            ToolCallRecord.from_dict(json.loads(r[0]))
            for r in self._db.read("SELECT call FROM tool_calls WHERE call_id = ?", (call_id,))
        ]
        return record_from_parts(head, history, turns, streams, tools)

    def list_calls(self, now: float, limit: int = 20, cursor: str | None = None) -> CallPage:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        sql = (
            "SELECT head, status, coalesce(stream_sid, ''), coalesce(media_node, ''), created_at, call_id "
            "FROM calls WHERE expires_at > ?"
        )
        args: tuple[Any, ...] = (now,)
        if cursor:
            created_at, call_id = decode_cursor(cursor)
            sql += " AND (created_at, call_id) < (?, ?)"
            args += (created_at, call_id)
        rows = self._db.read(sql + " ORDER BY created_at DESC, call_id DESC LIMIT ?", (*args, limit + 1))
        calls = [record_from_parts(self._head_of(r), [], [], []) for r in rows[:limit]]
        more = len(rows) > limit
        return CallPage(calls, encode_cursor(calls[-1].created_at, calls[-1].call_id) if more and calls else None)

    def apply_status(self, call_id: str, event: StatusEvent, now: float) -> StatusUpdate:
        with self._db.write() as db:
            row = db.execute("SELECT status FROM calls WHERE call_id = ? AND expires_at > ?", (call_id, now)).fetchone()
            if row is None:
                raise CallNotFound(call_id)
            history = tuple(
                StatusEvent.from_dict(json.loads(r[0]))
                for r in db.execute("SELECT event FROM status_events WHERE call_id = ?", (call_id,))
            )
            update = apply_status(CallStatus(row[0]), history, event)
            if update.history_changed:
                db.execute(
                    "INSERT OR IGNORE INTO status_events VALUES (?, ?, ?)",
                    (call_id, event.status.value, json.dumps(event.to_dict())),
                )
            if update.status_changed:
                db.execute("UPDATE calls SET status = ? WHERE call_id = ?", (update.status.value, call_id))
        return update

    def update_call(self, call_id: str, now: float, **fields: Any) -> None:
        changes = head_changes(**fields)
        with self._db.write() as db:
            row = db.execute("SELECT head FROM calls WHERE call_id = ? AND expires_at > ?", (call_id, now)).fetchone()
            if row is None:
                raise CallNotFound(call_id)
            head = {**json.loads(row[0]), **changes}
            db.execute("UPDATE calls SET head = ? WHERE call_id = ?", (json.dumps(head), call_id))

    def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        claimed = self._db.execute(
            "UPDATE calls SET stream_sid = ?, media_node = ? "
            "WHERE call_id = ? AND expires_at > ? AND stream_sid IS NULL",
            (stream_sid, media_node, call_id, now),
        )
        if claimed:
            return
        if self._head(call_id, now) is None:
            raise CallNotFound(call_id)
        raise StreamAlreadyClaimed(call_id)

    def _add_child(self, call_id: str, sql: str, args: tuple[Any, ...]) -> None:
        # Written only while the call exists: a callback or turn for an unknown call leaves no orphan row.
        with self._db.write() as db:
            if db.execute("SELECT 1 FROM calls WHERE call_id = ?", (call_id,)).fetchone() is None:
                raise CallNotFound(call_id)
            db.execute(sql, args)

    def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        self._add_child(
            call_id, "INSERT OR REPLACE INTO turns VALUES (?, ?, ?)", (call_id, turn.index, json.dumps(turn.to_dict()))
        )

    def add_tool_call(self, call_id: str, call: ToolCallRecord) -> None:
        self._add_child(
            call_id,
            "INSERT OR REPLACE INTO tool_calls VALUES (?, ?, ?)",
            (call_id, call.tool_call_id, json.dumps(call.to_dict())),
        )

    def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        self._add_child(
            call_id,
            "INSERT INTO stream_events (call_id, event) VALUES (?, ?)",
            (call_id, json.dumps(event.to_dict())),
        )

    # --- housekeeping

    def sweep_expired(self, now: float) -> int:
        """One bounded pass: up to SWEEP_BATCHES short transactions of SWEEP_BATCH expired calls (with their rows),
        then expired keys, windows and heartbeats. A caller with a backlog calls again while it returns > 0."""
        deleted = 0
        for _ in range(SWEEP_BATCHES):
            with self._db.write() as db:
                ids = [r[0] for r in db.execute(
                    "SELECT call_id FROM calls WHERE expires_at <= ? LIMIT ?", (now, SWEEP_BATCH))]  # fmt: skip
                marks = ",".join("?" * len(ids))
                for table in (*_CHILDREN, "calls") if ids else ():
                    deleted += db.execute(f"DELETE FROM {table} WHERE call_id IN ({marks})", ids).rowcount  # noqa: S608
            if len(ids) < SWEEP_BATCH:
                break
        for table in _CHILDREN:  # rows left by versions that stored callbacks for unknown calls
            deleted += self._db.execute(
                f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "  # noqa: S608
                f"WHERE call_id NOT IN (SELECT call_id FROM calls) LIMIT {SWEEP_BATCH})"
            )
        return deleted + self.coordination.sweep(now)

    def check_writable(self, now: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO store_meta VALUES ('last_start', ?)", (repr(now),))

    def close(self) -> None:
        self._db.close()
