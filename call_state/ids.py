"""The formats of ids that arrive from the wire, and how a value from the wire may appear in a log line.

Twilio's call SIDs are `CA` + 32 hex, stream SIDs `MZ` + 32 hex, account SIDs `AC` + 32 hex; our call ids are
short ASCII words (the control plane makes `c_` + 24 hex). A value that does not match its format never reaches a
log line as it is (a newline would forge a line, a megabyte would flood the log): `loggable()` gives a short repr.
"""

from __future__ import annotations

import re

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
STREAM_SID = re.compile(r"MZ[0-9a-fA-F]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_REPR_CHARS = 24


def loggable(value: object, pattern: re.Pattern[str]) -> str:
    """`value` itself when it matches `pattern` exactly, else a short repr (quoted, escaped, cut)."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    text = repr(value)
    return text if len(text) <= _REPR_CHARS else text[: _REPR_CHARS - 1] + "…"


def is_call_sid(value: object) -> bool:
    return isinstance(value, str) and CALL_SID.fullmatch(value) is not None


TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # Gemini function names
SAFE_TEXT = re.compile(r"[ -~]{1,100}")  # short printable ASCII: free text from a peer that may be logged as is
