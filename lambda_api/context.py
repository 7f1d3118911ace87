"""What the routes share: settings, the store, the Twilio client (built on first use), tokens, the clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from call_state.async_store import AsyncCallStore
from call_state.settings import Settings
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from lambda_api.rate_limit import TokenBucket


@dataclass
class ControlContext:
    settings: Settings
    store: AsyncCallStore
    twilio_client: TwilioRestClient | None = None
    clock: Callable[[], float] = time.time
    rate_limit: TokenBucket = field(default_factory=TokenBucket)

    @property
    def twilio(self) -> TwilioRestClient:
        if self.twilio_client is None:  # lazy: Lambda cold starts and healthz never pay for it
            s = self.settings
            self.twilio_client = TwilioRestClient(s.twilio_account_sid, s.twilio_auth_token, s.twilio_api_base_url)
        return self.twilio_client

    @property
    def tokens(self) -> StreamTokens | None:
        secret = self.settings.stream_token_secret.encode()
        return StreamTokens(secret) if len(secret) >= 16 else None
