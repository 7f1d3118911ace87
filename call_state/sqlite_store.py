"""The embedded call store: one SQLite file in WAL mode, for a laptop or a single VPS.

One connection guarded by a lock (sqlite3 objects must not be used by two threads at once); asyncio code reaches
it through AsyncCallStore, whose single worker thread keeps writes ordered. Status updates read and write inside
one IMMEDIATE transaction, so concurrent callbacks cannot lose an event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from call_state.record import CallFigures, CallRecord, CallStatus, StatusEvent, StreamEvent, TranscriptTurn
from call_state.status_rules import StatusUpdate, apply_status, history_order
from call_state.store import (
    MAX_PAGE_SIZE,
    CallExists,
    CallNotFound,
    CallPage,
    CallStore,
    IdempotencyClaim,
    StreamAlreadyClaimed,
)
from call_state.store_codec import decode_cursor, encode_cursor, head_changes, record_from_parts, record_head

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY, created_at REAL NOT NULL, expires_at INTEGER NOT NULL,
    status TEXT NOT NULL, head TEXT NOT NULL, stream_sid TEXT, media_node TEXT);
CREATE INDEX IF NOT EXISTS calls_by_created ON calls (created_at DESC, call_id DESC);
CREATE TABLE IF NOT EXISTS status_events (
    call_id TEXT NOT NULL, status TEXT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (call_id, status));
CREATE TABLE IF NOT EXISTS turns (
    call_id TEXT NOT NULL, idx INTEGER NOT NULL, turn TEXT NOT NULL, PRIMARY KEY (call_id, idx));
CREATE TABLE IF NOT EXISTS stream_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_events_by_call ON stream_events (call_id);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, call_id TEXT NOT NULL, response TEXT,
    expires_at INTEGER NOT NULL);
"""


class SqliteCallStore(CallStore):
    def __init__(self, path: str) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(calls)")}
        for column in ("stream_sid", "media_node"):  # files written by 0.1 lack them
            if column not in columns:
                self._db.execute(f"ALTER TABLE calls ADD COLUMN {column} TEXT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def create_call(self, record: CallRecord) -> None:
        head = json.dumps(record_head(record))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO calls (call_id, created_at, expires_at, status, head) VALUES (?, ?, ?, ?, ?)",
                    (record.call_id, record.created_at, record.expires_at, record.status.value, head),
                )
                for event in record.status_history:
                    self._db.execute(
                        "INSERT OR IGNORE INTO status_events VALUES (?, ?, ?)",
                        (record.call_id, event.status.value, json.dumps(event.to_dict())),
                    )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise CallExists(record.call_id) from exc

    @staticmethod
    def _head_of(row: tuple[Any, ...]) -> dict[str, Any]:
        head: dict[str, Any] = json.loads(row[0])
        head.update(status=row[1], stream_sid=row[2], media_node=row[3])
        return head

    def _head(self, call_id: str, now: float) -> dict[str, Any] | None:
        rows = self._query(
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
            for r in self._query("SELECT event FROM status_events WHERE call_id = ?", (call_id,))
        ]
        history.sort(key=history_order)
        turns = [
            TranscriptTurn.from_dict(json.loads(r[0]))
            for r in self._query("SELECT turn FROM turns WHERE call_id = ? ORDER BY idx", (call_id,))
        ]
        streams = [
            StreamEvent.from_dict(json.loads(r[0]))
            for r in self._query("SELECT event FROM stream_events WHERE call_id = ? ORDER BY id", (call_id,))
        ]
        return record_from_parts(head, history, turns, streams)

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
        rows = self._query(sql + " ORDER BY created_at DESC, call_id DESC LIMIT ?", (*args, limit + 1))
        calls = [record_from_parts(self._head_of(r), [], [], []) for r in rows[:limit]]
        more = len(rows) > limit
        return CallPage(calls, encode_cursor(calls[-1].created_at, calls[-1].call_id) if more and calls else None)

    def apply_status(self, call_id: str, event: StatusEvent, now: float) -> StatusUpdate:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT status FROM calls WHERE call_id = ? AND expires_at > ?", (call_id, now)
                ).fetchone()
                if row is None:
                    raise CallNotFound(call_id)
                history = tuple(
                    StatusEvent.from_dict(json.loads(r[0]))
                    for r in self._db.execute("SELECT event FROM status_events WHERE call_id = ?", (call_id,))
                )
                update = apply_status(CallStatus(row[0]), history, event)
                if update.history_changed:
                    self._db.execute(
                        "INSERT OR IGNORE INTO status_events VALUES (?, ?, ?)",
                        (call_id, event.status.value, json.dumps(event.to_dict())),
                    )
                if update.status_changed:
                    self._db.execute("UPDATE calls SET status = ? WHERE call_id = ?", (update.status.value, call_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return update

    def update_call(
        self,
        call_id: str,
        now: float,
        *,
        call_sid: str | None = None,
        error: str | None = None,
        figures: CallFigures | None = None,
    ) -> None:
        changes = head_changes(call_sid, error, figures)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT head FROM calls WHERE call_id = ? AND expires_at > ?", (call_id, now)
            ).fetchone()
            if row is None:
                self._db.execute("ROLLBACK")
                raise CallNotFound(call_id)
            head = {**json.loads(row[0]), **changes}
            self._db.execute("UPDATE calls SET head = ? WHERE call_id = ?", (json.dumps(head), call_id))
            self._db.execute("COMMIT")

    def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        claimed = self._execute(
            "UPDATE calls SET stream_sid = ?, media_node = ? "
            "WHERE call_id = ? AND expires_at > ? AND stream_sid IS NULL",
            (stream_sid, media_node, call_id, now),
        )
        if claimed:
            return
        if self._head(call_id, now) is None:
            raise CallNotFound(call_id)
        raise StreamAlreadyClaimed(call_id)

    def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        self._execute(
            "INSERT OR REPLACE INTO turns VALUES (?, ?, ?)", (call_id, turn.index, json.dumps(turn.to_dict()))
        )

    def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        self._execute(
            "INSERT INTO stream_events (call_id, event) VALUES (?, ?)", (call_id, json.dumps(event.to_dict()))
        )

    def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, now: float, ttl_seconds: int
    ) -> IdempotencyClaim:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM idempotency WHERE key = ? AND expires_at <= ?", (key, now))
            row = self._db.execute(
                "SELECT body_hash, call_id, response FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                self._db.execute(
                    "INSERT INTO idempotency VALUES (?, ?, ?, NULL, ?)",
                    (key, body_hash, call_id, int(now) + ttl_seconds),
                )
            self._db.execute("COMMIT")
        if row is None:
            return IdempotencyClaim(True, body_hash, call_id, None)
        return IdempotencyClaim(False, row[0], row[1], None if row[2] is None else json.loads(row[2]))

    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        self._execute("UPDATE idempotency SET response = ? WHERE key = ?", (json.dumps(response), key))

    def release_idempotency_key(self, key: str) -> None:
        self._execute("DELETE FROM idempotency WHERE key = ?", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
