from __future__ import annotations

import pytest

from call_state.tokens import StreamTokens, TokenError

SECRET = b"test-stream-secret-not-real-0123"


def test_round_trip_and_expiry() -> None:
    tokens = StreamTokens(SECRET, ttl_seconds=300)
    token = tokens.mint("call-a", now=1000.0)
    tokens.verify(token, "call-a", now=1299.0)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token, "call-a", now=1301.0)
    assert len(token) < 100  # far below Twilio's 500-character <Parameter> limit


def test_token_of_one_call_is_useless_for_another() -> None:
    tokens = StreamTokens(SECRET)
    with pytest.raises(TokenError, match="signature"):
        tokens.verify(tokens.mint("call-a", 1000.0), "call-b", 1001.0)


def test_other_secret_and_tampering_rejected() -> None:
    token = StreamTokens(SECRET).mint("call-a", 1000.0)
    with pytest.raises(TokenError):
        StreamTokens(b"another-secret-not-real-456789").verify(token, "call-a", 1001.0)
    expiry, _, sig = token.partition(".")
    with pytest.raises(TokenError):  # pushing the expiry forward breaks the signature
        StreamTokens(SECRET).verify(f"{int(expiry) + 3600}.{sig}", "call-a", 1001.0)


@pytest.mark.parametrize("bad", ["", ".", "abc", "123.", ".sig", "12a.sig", "9" * 40 + ".x", "1000.sig.extra"])
def test_malformed_tokens_raise_token_error(bad: str) -> None:
    with pytest.raises(TokenError):
        StreamTokens(SECRET).verify(bad, "call-a", 1000.0)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        StreamTokens(b"short")


@pytest.mark.parametrize("token", ["².abc", "١٢٣.abc", "123", ".abc", "1" * 13 + ".abc", "123.sig\u00e9"])
def test_malformed_tokens_are_token_errors_never_crashes(token: str) -> None:
    with pytest.raises(TokenError, match="malformed"):
        StreamTokens(b"x" * 32).verify(token, "call-1", 1_800_000_000)
