"""Reading a response body we did not choose: bounded after decompression, and JSON held to the standard.

A user's server (or whatever answers in its place) may send a body that never ends, a small gzip that inflates
to gigabytes, or JSON that Python would accept but no one else should (`NaN`, `1e999`, integers of 5,000
digits, nesting deep enough to exhaust the parser). `read_capped` stops the moment the decoded body would pass
`limit` and inflates at most `limit + 1` bytes per chunk; `parse_json` refuses what is not portable JSON.
Transport errors (timeouts, dropped connections) pass through for the caller to classify.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import httpx

from call_state.numbers import ascii_int


class BodyTooLarge(Exception):
    """The body (after decompression) is over the limit."""


class BodyUnreadable(ValueError):
    """The body cannot be decoded; the message says why, briefly."""


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The decoded body, at most `limit` bytes; BodyTooLarge as soon as it would exceed that."""
    if response.is_stream_consumed:  # a transport that reads bodies itself (httpx.MockTransport): decoded already
        if len(response.content) > limit:
            raise BodyTooLarge
        return response.content
    declared = ascii_int(response.headers.get("content-length", ""))
    if declared is not None and declared > limit:
        raise BodyTooLarge
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    inflater = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if "gzip" in encoding else 0))
    elif encoding not in ("", "identity"):
        raise BodyUnreadable("unsupported Content-Encoding (send identity)")
    body = bytearray()
    async for chunk in response.aiter_raw():
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk, limit + 1 - len(body))
            except zlib.error:
                raise BodyUnreadable("response body does not decompress") from None
            if inflater.unconsumed_tail:
                raise BodyTooLarge
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    """The JSON value in `raw`; BodyUnreadable if it is empty, not UTF-8 JSON, or not portable JSON."""
    try:
        return json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise BodyUnreadable("empty response body" if not raw.strip() else "response body is not valid JSON") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value
