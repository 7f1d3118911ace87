"""What the control plane coordinates on, in SQLite: Idempotency-Key claims, pacing windows, node heartbeats.

Each method is one short transaction on the shared `SqliteDb`, so two processes on one file agree (a key is
claimed once, a window never counts past its limit). `SqliteCallStore` delegates its methods here.
"""

from __future__ import annotations

import json
from typing import Any

from call_state.nodes import NodeHeartbeat
from call_state.sqlite_db import SqliteDb
from call_state.store import IdempotencyClaim, IdemState

COORDINATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, body_hash TEXT NOT NULL, call_id TEXT NOT NULL, response TEXT,
    expires_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rate_windows (
    key TEXT NOT NULL, period INTEGER NOT NULL, used INTEGER NOT NULL, expires_at INTEGER NOT NULL,
    PRIMARY KEY (key, period));
CREATE TABLE IF NOT EXISTS node_heartbeats (
    node_id TEXT PRIMARY KEY, heartbeat TEXT NOT NULL, fresh_until REAL NOT NULL);
"""
# Columns added after 0.2's idempotency table (files written by it lack them; old claims read as claimed).
_IDEM_COLUMNS = {"state": "TEXT NOT NULL DEFAULT 'claimed'", "lease_until": "REAL NOT NULL DEFAULT 0",
                 "holder": "TEXT NOT NULL DEFAULT ''"}  # fmt: skip
_IDEM_ROW = "SELECT body_hash, call_id, response, state, lease_until, holder FROM idempotency WHERE key = ?"


def _claim_of(row: tuple[Any, ...], claimed: bool = False) -> IdempotencyClaim:
    body_hash, call_id, response, state, lease_until, holder = row
    done = response is not None
    return IdempotencyClaim(
        claimed,
        body_hash,
        call_id,
        json.loads(response) if done else None,
        IdemState.DONE if done else IdemState(state),
        float(lease_until),
        holder,
    )


class SqliteCoordination:
    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        present = db.columns("idempotency")
        for column, decl in _IDEM_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE idempotency ADD COLUMN {column} {decl}")

    def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, holder: str, now: float, ttl_seconds: int, lease_seconds: float
    ) -> IdempotencyClaim:
        lease_until = now + lease_seconds
        with self._db.write() as db:
            db.execute("DELETE FROM idempotency WHERE key = ? AND expires_at <= ?", (key, now))
            row = db.execute(_IDEM_ROW, (key,)).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO idempotency (key, body_hash, call_id, response, expires_at, state, lease_until, "
                    "holder) VALUES (?, ?, ?, NULL, ?, 'claimed', ?, ?)",
                    (key, body_hash, call_id, int(now) + ttl_seconds, lease_until, holder),
                )
                return IdempotencyClaim(True, body_hash, call_id, None, IdemState.CLAIMED, lease_until, holder)
            held = _claim_of(row)
            if held.state is IdemState.CLAIMED and held.lease_until <= now and held.body_hash == body_hash:
                # Its holder died (or stalled) before dialling: this request takes over, with the same call id.
                db.execute(
                    "UPDATE idempotency SET holder = ?, lease_until = ? WHERE key = ?", (holder, lease_until, key)
                )
                return IdempotencyClaim(True, body_hash, held.call_id, None, IdemState.CLAIMED, lease_until, holder)
            return held

    def mark_idempotency_dialling(self, key: str, holder: str, now: float) -> bool:
        changed = self._db.execute(
            "UPDATE idempotency SET state = 'dialling' WHERE key = ? AND holder = ? AND state = 'claimed' "
            "AND response IS NULL",
            (key, holder),
        )
        return changed == 1

    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE idempotency SET response = ?, state = 'done' WHERE key = ?", (json.dumps(response), key)
        )

    def release_idempotency_key(self, key: str, holder: str) -> None:
        self._db.execute("DELETE FROM idempotency WHERE key = ? AND holder = ? AND response IS NULL", (key, holder))

    def take_rate_slot(self, key: str, window: int, limit: int, expires_at: int) -> bool:
        with self._db.write() as db:
            row = db.execute("SELECT used FROM rate_windows WHERE key = ? AND period = ?", (key, window)).fetchone()
            if row is not None and row[0] >= limit:
                return False
            db.execute(
                "INSERT INTO rate_windows VALUES (?, ?, 1, ?) ON CONFLICT (key, period) DO UPDATE SET used = used + 1",
                (key, window, expires_at),
            )
            return True

    def put_node_heartbeat(self, heartbeat: NodeHeartbeat, ttl_seconds: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO node_heartbeats VALUES (?, ?, ?)",
            (heartbeat.node_id, json.dumps(heartbeat.to_dict()), heartbeat.at + ttl_seconds),
        )

    def node_heartbeats(self, now: float) -> list[NodeHeartbeat]:
        rows = self._db.read("SELECT heartbeat FROM node_heartbeats WHERE fresh_until > ? ORDER BY node_id", (now,))
        return [NodeHeartbeat.from_dict(json.loads(r[0])) for r in rows]

    def sweep(self, now: float) -> int:
        deleted = self._db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
        deleted += self._db.execute("DELETE FROM rate_windows WHERE expires_at <= ?", (now,))
        # A heartbeat an hour stale is a node that is gone; recent stale ones stay visible for debugging.
        deleted += self._db.execute("DELETE FROM node_heartbeats WHERE fresh_until <= ?", (now - 3600,))
        return deleted
