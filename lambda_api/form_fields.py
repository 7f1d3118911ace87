"""Reading a Twilio webhook's form: values checked against their formats before they are stored or logged."""

from __future__ import annotations

import re

from starlette.datastructures import FormData

from call_state.ids import CALL_SID, loggable


def text(form: FormData, name: str, limit: int = 200) -> str:
    """The field as text, cut to `limit` ("" when absent or not text)."""
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def sid(form: FormData, name: str = "CallSid", pattern: re.Pattern[str] = CALL_SID) -> str:
    """The SID if it has Twilio's format, else "" (never stored or logged as sent)."""
    value = text(form, name, 64)
    return value if pattern.fullmatch(value) else ""


def shown(form: FormData, name: str = "CallSid", pattern: re.Pattern[str] = CALL_SID) -> str:
    """For log lines: the SID, or a short repr of whatever came instead."""
    return loggable(form.get(name), pattern)
