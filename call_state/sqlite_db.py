"""One SQLite connection, safe for threads in this process and for other processes on the same file.

- WAL journal: readers never block the writer, and two processes (the blue and green colours of an upgrade) can
  share the file.
- A busy timeout: a writer waits (up to `busy_timeout_s`) for another process's transaction instead of failing.
- Short transactions: every write goes through `write()`, which takes the write lock at once (BEGIN IMMEDIATE, so
  two writers never deadlock upgrading a read lock), commits, and rolls back on any exception. The connection is
  never left inside a transaction: if even the rollback fails, the connection is replaced.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Connect = Callable[..., sqlite3.Connection]


class SqliteDb:
    def __init__(self, path: str, schema: str, *, connect: Connect = sqlite3.connect, busy_timeout_s: float = 10.0):
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._connect_fn = connect
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._db = self._connect()
        self._apply_schema(schema)

    def _connect(self) -> sqlite3.Connection:
        db = self._connect_fn(self.path, check_same_thread=False, isolation_level=None, timeout=self._busy_timeout_s)
        db.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _apply_schema(self, schema: str) -> None:
        with self._lock:
            # executescript commits on its own; each CREATE ... IF NOT EXISTS is one short statement.
            self._db.executescript(schema)

    def columns(self, table: str) -> set[str]:
        return {str(row[1]) for row in self.read(f"PRAGMA table_info({table})")}

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One query outside any transaction (WAL gives it a consistent snapshot)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        """One writing statement in its own transaction; the number of rows it changed."""
        with self.write() as db:
            return db.execute(sql, args).rowcount

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back if anything in it raises."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise

    def _roll_back(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.error("sqlite rollback failed (%s): reopening the connection to %s", type(exc).__name__, self.path)
            self._reopen()
            return
        if self._db.in_transaction:  # cannot happen with sqlite3 today; never leave it wedged if it does
            self._reopen()

    def _reopen(self) -> None:
        try:
            self._db.close()  # closing discards the open transaction
        except sqlite3.Error:
            pass
        self._db = self._connect()

    def close(self) -> None:
        with self._lock:
            self._db.close()
