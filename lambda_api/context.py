"""What the routes share: settings, the store, the media plane, pacing, Idempotency-Keys, the Twilio client, the
client for requests to the user's servers, and the end-of-call logic (it queues the webhook)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request

from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall
from call_state.outbound import OutboundClient
from call_state.outbound import outbound_client as make_outbound_client
from call_state.settings import Settings
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from lambda_api.idempotency import IdempotencyKeys
from lambda_api.media_plane import MediaPlane
from lambda_api.pacing import CallPacing


@dataclass
class ControlContext:
    settings: Settings
    store: AsyncCallStore
    media_plane: MediaPlane
    pacing: CallPacing
    keys: IdempotencyKeys
    end_of_call: EndOfCall
    twilio_client: TwilioRestClient | None = None
    outbound_client: OutboundClient | None = None
    clock: Callable[[], float] = time.time

    @property
    def twilio(self) -> TwilioRestClient:
        if self.twilio_client is None:  # lazy: Lambda cold starts and healthz never pay for it
            s = self.settings
            self.twilio_client = TwilioRestClient(s.twilio_account_sid, s.twilio_auth_token, s.twilio_api_base_url)
        return self.twilio_client

    @property
    def outbound(self) -> OutboundClient | None:
        """The signed client for tools and webhooks (URL checks at /make-call); None without WEBHOOK_SECRET."""
        if self.outbound_client is None:
            self.outbound_client = make_outbound_client(self.settings)
        return self.outbound_client

    @property
    def tokens(self) -> StreamTokens | None:
        secret = self.settings.stream_token_secret.encode()
        return StreamTokens(secret) if len(secret) >= 16 else None

    def control_missing(self) -> list[str]:
        """What this control plane lacks to dial (named in the authenticated /make-call 503 only)."""
        missing = [n for n in self.settings.missing_credentials() if n.startswith("TWILIO_")]
        return missing + ([] if self.tokens else ["STREAM_TOKEN_SECRET"])


def ctx_of(request: Request) -> ControlContext:
    ctx: ControlContext = request.app.state.ctx
    return ctx
