"""The signature on every request we send to a user's server (tool calls and webhooks). No I/O, no clock.

    X-Voice-Agent-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(WEBHOOK_SECRET, "<t>.<raw body>")>

The timestamp is inside the signed text, so a receiver that rejects old `t` values (5 minutes is the advice in
docs/webhooks.md) cannot be fed a captured request later. `verify()` is what our own tests and stand-ins use; it
accepts several `v1=` entries so a receiver can check a header signed during a secret rotation.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from call_state.numbers import ascii_int

SIGNATURE_HEADER = "X-Voice-Agent-Signature"
REPLAY_WINDOW_SECONDS = 300
MIN_SECRET_LENGTH = 16
_MAX_HEADER_LENGTH = 1024  # a real header is ~80 characters; anything longer is not ours


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match the body."""


@dataclass(frozen=True)
class WebhookSigner:
    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_LENGTH:
            raise ValueError(f"webhook secret must be at least {MIN_SECRET_LENGTH} bytes")

    def _mac(self, timestamp: int, body: bytes) -> str:
        return hmac.new(self.secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

    def sign(self, body: bytes, now: float) -> str:
        """The header value for `body` sent at `now` (unix seconds)."""
        timestamp = int(now)
        return f"t={timestamp},v1={self._mac(timestamp, body)}"

    def verify(self, header: str, body: bytes, now: float, tolerance_s: int = REPLAY_WINDOW_SECONDS) -> int:
        """Return the signed timestamp, or raise SignatureError. Never raises anything else, whatever `header` is."""
        if not isinstance(header, str) or not header or len(header) > _MAX_HEADER_LENGTH or not header.isascii():
            raise SignatureError("missing or malformed signature header")
        timestamp: int | None = None
        candidates: list[str] = []
        for item in header.split(","):
            key, sep, value = item.strip().partition("=")
            if not sep:
                raise SignatureError("malformed signature header")
            if key == "t":
                if timestamp is not None:
                    raise SignatureError("two timestamps in the signature header")
                timestamp = ascii_int(value, max_digits=12)
            elif key == "v1":
                candidates.append(value)
        if timestamp is None or not candidates:
            raise SignatureError("signature header needs t=<unix seconds> and v1=<hex>")
        expected = self._mac(timestamp, body).encode()
        # Compare every candidate (no early exit) before looking at the clock: timing says nothing useful.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate.encode())
        if not matched:
            raise SignatureError("signature does not match the body")
        if abs(now - timestamp) > tolerance_s:
            raise SignatureError("signature timestamp outside the replay window")
        return timestamp
