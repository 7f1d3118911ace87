"""Who may open a media stream: pure checks on the upgrade headers and the `start` message.

- `x-twilio-signature` of the upgrade: HMAC over the wss:// URL from the TwiML with no params, accepted with and
  without a trailing slash (Twilio's own advice for WSS handshakes). Browser calls have no signature: their
  upgrade's Origin was checked instead (app.py).
- the `token` custom parameter, bound to `call_id` by HMAC (call_state.tokens), verified before the store is read;
- the record: it exists and has not expired, it is a call of this route's kind (phone or browser), of our Twilio
  account, and `start.callSid` equals the record's own call SID when the record has one.
Single use is not decided here: it is the store's conditional `claim_stream` (stream_intake.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twilio.request_validator import RequestValidator

from call_state.ids import CALL_ID
from call_state.record import CallRecord, Direction
from call_state.tokens import StreamTokens, TokenError
from media_node.twilio_stream import Started


class StreamRefused(Exception):
    """The stream must be closed (1008, or 1013 for capacity); `code` is a short label for metrics."""

    def __init__(self, code: str, detail: str = "", close_code: int = 1008) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code, self.close_code = code, close_code


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
            raise StreamRefused("no_signature", "upgrade has no x-twilio-signature")
        validator = RequestValidator(self.auth_token)
        base = self.stream_url.rstrip("/")
        if not any(validator.validate(url, {}, signature) for url in (base, base + "/")):
            raise StreamRefused("bad_signature", "upgrade signature does not match MEDIA_STREAM_URL")

    def verify_token(self, started: Started, now: float) -> str:
        """The call id the `start` names, once its token is proved; no store read happens before this."""
        if self.tokens is None:
            raise StreamRefused("not_configured", "STREAM_TOKEN_SECRET is not configured: refusing every stream")
        call_id = started.custom_parameters.get("call_id", "")
        if not CALL_ID.fullmatch(call_id):
            raise StreamRefused("bad_call_id", "start has no valid call_id parameter")
        try:
            self.tokens.verify(started.custom_parameters.get("token", ""), call_id, now)
        except TokenError as exc:
            raise StreamRefused("bad_token", str(exc)) from None
        return call_id

    def check_record(self, started: Started, record: CallRecord | None, browser: bool) -> CallRecord:
        if record is None:
            raise StreamRefused("unknown_call", "no such call (or it expired)")
        if (record.direction is Direction.BROWSER) != browser:
            raise StreamRefused("wrong_route", "browser calls use /browser-stream, phone calls /stream")
        if not browser and self.account_sid and started.account_sid != self.account_sid:
            raise StreamRefused("wrong_account", "start.accountSid is not our Twilio account")
        if not browser and record.call_sid and started.call_sid != record.call_sid:
            raise StreamRefused("call_sid_mismatch", "start.callSid is not this call's")
        return record
