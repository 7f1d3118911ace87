"""`OutageLog`: one WARNING when a periodic store job starts failing, one INFO when it works again.

A background job (heartbeat, sweep) that fails every few seconds while the store is down must not fill the log:
the first failure of an outage is logged with its reason, the rest are counted, and the recovery says how many.
"""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.failures = 0  # in the current outage

    def failed(self, exc: BaseException) -> None:
        if self.failures == 0:
            self._log.warning("%s failed (%s: %s); retrying quietly until it works", self._what,
                              type(exc).__name__, str(exc)[:200])  # fmt: skip
        self.failures += 1

    def succeeded(self) -> None:
        if self.failures:
            self._log.info("%s works again after %d failed attempts", self._what, self.failures)
        self.failures = 0
