"""A real SQLite store whose writes fail while `failing` is set: a full disk, a throttled or unreachable table."""

from __future__ import annotations

import sqlite3
from typing import Any

from call_state.sqlite_store import SqliteCallStore


class FlakySqliteStore(SqliteCallStore):
    failing = False
    refused_writes = 0

    def _check(self) -> None:
        if self.failing:
            self.refused_writes += 1
            raise sqlite3.OperationalError("database or disk is full")

    def apply_status(self, *args: Any, **kwargs: Any) -> Any:
        self._check()
        return super().apply_status(*args, **kwargs)

    def update_call(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().update_call(*args, **kwargs)

    def add_turn(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().add_turn(*args, **kwargs)

    def claim_stream(self, *args: Any, **kwargs: Any) -> None:
        self._check()
        super().claim_stream(*args, **kwargs)
