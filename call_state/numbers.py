"""Numbers from the wire, parsed ASCII-only: `[0-9]+` and nothing else.

`str.isdigit()` is true for "²" and "٣", which `int()` then rejects or reads as another digit; a number field
from Twilio, Gemini, a token or the environment must never raise, and never mean something we did not expect.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]{1,18}")  # at most 18 digits: fits int64, and bounds the work on hostile input


def ascii_int(value: object, max_digits: int = 18) -> int | None:
    """The non-negative integer `value` spells in ASCII digits, or None for anything else (never raises)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if len(value) > max_digits or not _DIGITS.fullmatch(value):
        return None
    return int(value)
