"""Who may open a media stream: a signed upgrade from Twilio, and a fresh token for a known call.

Two independent checks (the exact URL Twilio signs for a WebSocket upgrade is not documented end to end, so
the per-call token is the one that cannot be skipped):
- `x-twilio-signature` of the upgrade, HMAC over the wss:// URL from the TwiML with no params, accepted with and
  without a trailing slash (Twilio's own advice for WSS handshakes);
- the `token` custom parameter, bound to `call_id` by HMAC (call_state.tokens), for a record that exists, has
  not expired, and has no other stream yet (single use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from call_state.record import CallRecord, Direction
from call_state.tokens import StreamTokens, TokenError
from media_node.twilio_stream import Started


class StreamRefused(Exception):
    """The stream must be closed with 1008; the message is the logged reason (no secrets in it)."""


@dataclass(frozen=True)
class StreamGate:
    tokens: StreamTokens | None
    auth_token: str
    stream_url: str
    account_sid: str = ""

    def check_upgrade(self, headers: Mapping[str, str]) -> None:
        if not self.auth_token:
            return  # local mode without Twilio credentials: the token check still applies
        signature = headers.get("x-twilio-signature", "")
        if not signature:
            raise StreamRefused("upgrade has no x-twilio-signature")
        validator = RequestValidator(self.auth_token)
        base = self.stream_url.rstrip("/")
        if not any(validator.validate(url, {}, signature) for url in (base, base + "/")):
            raise StreamRefused("upgrade signature does not match MEDIA_STREAM_URL")

    def call_id(self, started: Started) -> str:
        call_id = started.custom_parameters.get("call_id", "")
        if not call_id or len(call_id) > 128:
            raise StreamRefused("start has no call_id parameter")
        return call_id

    def check_start(
        self, started: Started, record: CallRecord | None, now: float, *, browser: bool = False
    ) -> CallRecord:
        if self.tokens is None:
            raise StreamRefused("STREAM_TOKEN_SECRET is not configured: refusing every stream")
        call_id = self.call_id(started)
        try:
            self.tokens.verify(started.custom_parameters.get("token", ""), call_id, now)
        except TokenError as exc:
            raise StreamRefused(f"bad stream token: {exc}") from None
        if record is None:
            raise StreamRefused("no such call (or it expired)")
        if (record.direction is Direction.BROWSER) != browser:
            raise StreamRefused("browser calls use /browser-stream, phone calls /stream")
        if not browser and self.account_sid and started.account_sid != self.account_sid:
            raise StreamRefused("start.accountSid is not our Twilio account")
        if record.stream_sid and record.stream_sid != started.stream_sid:
            raise StreamRefused("this call already had a media stream")
        return record
