"""Short-lived stream tokens that bind a Media Streams connection to one call record.

The control plane mints a token when it answers Twilio's TwiML webhook and passes it as a `<Parameter>`;
the media node checks it in the `start` message before opening a Gemini session. The token is
`<expiry>.<signature>` where the signature is HMAC-SHA256(secret, "<call_id>.<expiry>"): it names no call,
so a token of one call is useless for another, and it stays far below Twilio's 500-character limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from call_state.numbers import ascii_int

DEFAULT_TOKEN_TTL_SECONDS = 300  # Twilio opens the stream right after fetching TwiML


class TokenError(ValueError):
    """The token is malformed, expired or was not made for this call."""


@dataclass(frozen=True)
class StreamTokens:
    secret: bytes
    ttl_seconds: int = DEFAULT_TOKEN_TTL_SECONDS

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("stream token secret must be at least 16 bytes")

    def _sign(self, call_id: str, expiry: int) -> str:
        mac = hmac.new(self.secret, f"{call_id}.{expiry}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def mint(self, call_id: str, now: float) -> str:
        expiry = int(now) + self.ttl_seconds
        return f"{expiry}.{self._sign(call_id, expiry)}"

    def verify(self, token: str, call_id: str, now: float) -> None:
        """Raise TokenError unless `token` was minted for `call_id` and has not expired."""
        expiry_text, sep, signature = token.partition(".")
        expiry = ascii_int(expiry_text, max_digits=12)
        if not sep or expiry is None or not signature or not signature.isascii():
            raise TokenError("malformed token")
        # Compare before checking expiry so timing does not reveal which check failed.
        valid = hmac.compare_digest(signature.encode(), self._sign(call_id, expiry).encode())
        if not valid:
            raise TokenError("token signature does not match this call")
        if expiry < now:
            raise TokenError("token expired")
        if expiry > now + self.ttl_seconds + 60:
            raise TokenError("token expiry too far in the future")
