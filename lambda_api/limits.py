"""Limits on what a request may send, enforced before anything is parsed.

`BodyLimits` is an ASGI layer that counts the body bytes actually received (chunked bodies included, whatever
Content-Length says) and stops reading at the route's limit: the route's `await request.body()` then raises
`BodyTooLarge` (413) or, when the body trickles in slower than `BODY_TIMEOUT_S`, `BodyTooSlow` (408). A response
sent before the body was read to its end carries `Connection: close`, so the rest is never read at all.

The parsers take the bounded bytes: `parse_form` (urlencoded only: no multipart parser, no temp file ever runs)
and `parse_json_object` (size and nesting depth checked before `json.loads`, NaN/Infinity refused).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import FormData, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from call_state.numbers import ascii_int
from lambda_api.errors import ApiError

FORM_MAX_BYTES = 64 * 1024  # Twilio's webhooks are a few KB
JSON_MAX_BYTES = 32 * 1024  # /browser-calls: an 8,000-character prompt and 4 KB of metadata fit
MAKE_CALL_MAX_BYTES = 128 * 1024  # /make-call: the same, and 16 tools with their JSON schemas
DEFAULT_MAX_BYTES = 4 * 1024  # routes that take no body
BODY_TIMEOUT_S = 10.0  # the whole body must arrive within this (a slow-body client holds nothing longer)
JSON_MAX_DEPTH = 16
FORM_MAX_FIELDS = 200
FORM_TYPE = "application/x-www-form-urlencoded"


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "too_large", f"request bodies here are limited to {limit} bytes")


class BodyTooSlow(ApiError):
    def __init__(self) -> None:
        super().__init__(408, "body_timeout", f"the request body must arrive within {BODY_TIMEOUT_S:.0f} s")


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return b""


class _Body:
    """One request's body as it arrives: counted, under a deadline, refused past the limit."""

    def __init__(self, receive: Receive, scope: Scope, limit: int, timeout_s: float) -> None:
        self._receive = receive
        self.limit = limit
        self._timeout_s = timeout_s
        length_text = _header(scope, b"content-length").decode("latin-1")
        self._declared = ascii_int(length_text) if length_text else None
        chunked = b"chunked" in _header(scope, b"transfer-encoding").lower()
        self.complete = not chunked and not self._declared  # no body at all
        self._received = 0
        self._deadline = 0.0

    async def receive(self) -> Message:
        if self.complete:
            return await self._receive()  # the body is read (or there is none): e.g. waiting for a disconnect
        if self._declared is not None and self._declared > self.limit:
            raise BodyTooLarge(self.limit)  # refused before a byte of it is read
        self._deadline = self._deadline or asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._receive()
        except TimeoutError:
            raise BodyTooSlow from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self.limit:
                raise BodyTooLarge(self.limit)
            self.complete = not message.get("more_body", False)
        return message


class BodyLimits:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], timeout_s: float = BODY_TIMEOUT_S) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = _Body(receive, scope, self.limit_for(scope["path"]), self.timeout_s)

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body.complete:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, body.receive, closing_send)


def content_type(headers: Any) -> str:
    return str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()


def parse_form(body: bytes) -> FormData:
    """A urlencoded body as FormData (repeated names kept); 400 when it has too many fields."""
    try:
        pairs: list[tuple[str, str | UploadFile]] = list(
            parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=FORM_MAX_FIELDS)
        )
    except ValueError:
        raise ApiError(400, "invalid_form", f"forms are limited to {FORM_MAX_FIELDS} fields") from None
    return FormData(pairs)


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def json_depth(body: bytes, stop_at: int) -> int:
    """Nesting depth of JSON text (brackets inside strings ignored), counted up to `stop_at`."""
    brackets = _STRINGS.sub(b"", body).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        depth += 1 if c in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest >= stop_at:
                break
    return deepest


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(body: bytes, max_depth: int = JSON_MAX_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, or ApiError 400 (not JSON, not an object, nested deeper than `max_depth`)."""
    if json_depth(body, max_depth + 1) > max_depth:
        raise ApiError(400, "invalid_json", f"JSON may nest at most {max_depth} levels")
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)  # UTF-8 only (RFC 8259)
    except (ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return data
