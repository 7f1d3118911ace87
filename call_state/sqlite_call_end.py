"""The end of a call in SQLite: which side has reported (columns of `calls`), and the webhook outbox (a table).

- `media_done` / `status_done`: each marks its side and, in the same IMMEDIATE transaction, completes the pair when
  the other side is marked (or, for the status side, when the call never had a stream) and nobody has completed
  it yet. Transactions on one file are serialised (also across processes), so exactly one caller gets True.
- `webhook_jobs`: one row per call and job kind, with the time it is due and a lease, so two processes on one file
  (the blue and green colours of an upgrade) never attempt the same job at once. `SqliteCallStore` delegates here.
"""

from __future__ import annotations

from call_state.sqlite_db import SqliteDb
from call_state.store import CallNotFound
from call_state.webhook_jobs import JobKind, WebhookJob

CALL_END_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhook_jobs (
    call_id TEXT NOT NULL, kind TEXT NOT NULL, first_due_at REAL NOT NULL, due_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0, expires_at INTEGER NOT NULL, PRIMARY KEY (call_id, kind));
CREATE INDEX IF NOT EXISTS webhook_jobs_by_due ON webhook_jobs (due_at);
"""
CALL_COLUMNS = ("ended_at", "media_done_at", "pair_done_at")  # columns of `calls`, added to files made before them
_PAIR = "SELECT ended_at, media_done_at, pair_done_at, stream_sid FROM calls WHERE call_id = ?"


class SqliteCallEnd:
    def __init__(self, db: SqliteDb) -> None:
        self._db = db
        present = db.columns("calls")
        for column in CALL_COLUMNS:
            if column not in present:
                db.execute(f"ALTER TABLE calls ADD COLUMN {column} REAL")

    def _mark(self, call_id: str, column: str, now: float) -> bool:
        with self._db.write() as db:
            row = db.execute(_PAIR, (call_id,)).fetchone()
            if row is None:
                raise CallNotFound(call_id)
            ended, media_done, pair_done, stream_sid = row
            db.execute(f"UPDATE calls SET {column} = coalesce({column}, ?) WHERE call_id = ?", (now, call_id))  # noqa: S608 - our own column names
            if column == "ended_at":
                complete = media_done is not None or stream_sid is None
            else:
                complete = ended is not None
            if pair_done is not None or not complete:
                return False
            db.execute("UPDATE calls SET pair_done_at = ? WHERE call_id = ?", (now, call_id))
            return True

    def media_done(self, call_id: str, now: float) -> bool:
        return self._mark(call_id, "media_done_at", now)

    def status_done(self, call_id: str, now: float) -> bool:
        return self._mark(call_id, "ended_at", now)

    def add_webhook_job(self, job: WebhookJob, expires_at: int) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO webhook_jobs (call_id, kind, first_due_at, due_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (job.call_id, job.kind.value, job.first_due_at, job.first_due_at, expires_at),
        )

    def claim_webhook_jobs(self, now: float, lease_s: float, limit: int) -> list[WebhookJob]:
        with self._db.write() as db:
            rows = db.execute(
                "SELECT call_id, kind, first_due_at FROM webhook_jobs WHERE due_at <= ? AND lease_until <= ? "
                "ORDER BY due_at LIMIT ?",
                (now, now, limit),
            ).fetchall()
            db.executemany(
                "UPDATE webhook_jobs SET lease_until = ? WHERE call_id = ? AND kind = ?",
                [(now + lease_s, call_id, kind) for call_id, kind, _ in rows],
            )
        return [WebhookJob(call_id, JobKind(kind), float(first_due_at)) for call_id, kind, first_due_at in rows]

    def reschedule_webhook_job(self, job: WebhookJob, due_at: float) -> None:
        self._db.execute(
            "UPDATE webhook_jobs SET due_at = ?, lease_until = 0 WHERE call_id = ? AND kind = ?",
            (due_at, job.call_id, job.kind.value),
        )

    def remove_webhook_job(self, job: WebhookJob) -> None:
        self._db.execute("DELETE FROM webhook_jobs WHERE call_id = ? AND kind = ?", (job.call_id, job.kind.value))
