"""What the control-plane tests share: settings, a manual clock, signed webhooks, a media node heartbeat, a store
that fails on demand, and the app wired to the loopback Twilio REST stand-in."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from call_state.call_end import EndOfCall
from call_state.nodes import NodeHeartbeat
from call_state.outbound import OutboundClient
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.twilio_rest import TwilioRestClient
from lambda_api.app import create_app
from lambda_api.media_plane import MediaPlane
from tests.standins.twilio_rest import TwilioRestStandIn

ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-not-real"
API_KEY = "test-api-key-not-real-0123456789"
SECRET = "test-stream-secret-not-real-0123456789"
PUBLIC = "https://voice.example.com"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def settings_for(twilio: TwilioRestStandIn, **overrides: Any) -> Settings:
    return replace(
        Settings.from_env(
            {
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_PHONE_NUMBER": "+15550001111",
                "TWILIO_API_BASE_URL": twilio.base_url,
                "GEMINI_API_KEY": "test-gemini-key-not-real",
                "API_KEY": API_KEY,
                "PUBLIC_URL": PUBLIC,
                "MEDIA_STREAM_URL": "wss://media.example.com/stream",
                "ALLOWED_DESTINATIONS": "+1,+58",
                "STREAM_TOKEN_SECRET": SECRET,
            }
        ),
        **overrides,
    )


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def heartbeat(clock: Clock, **fields: Any) -> NodeHeartbeat:
    values: dict[str, Any] = {"node_id": "node-a", "draining": False, "configured": True, "active_calls": 0,
                              "capacity": 100, "at": clock.now}  # fmt: skip
    values.update(fields)
    return NodeHeartbeat(**values)


def beat(store: CallStore, clock: Clock, ttl: int = 3600, **fields: Any) -> None:
    """A media node reporting in (fresh for `ttl` seconds of the test clock)."""
    store.put_node_heartbeat(heartbeat(clock, **fields), ttl)


@asynccontextmanager
async def control_api(
    twilio: TwilioRestStandIn,
    store: Any,
    *,
    clock: Clock | None = None,
    media_plane: MediaPlane | None = None,
    node: bool = True,
    twilio_client: TwilioRestClient | None = None,
    outbound: OutboundClient | None = None,
    end_of_call: EndOfCall | None = None,
    **overrides: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """The control app over ASGI; with `node`, a healthy media node has reported in through the store."""
    clock = clock or Clock()
    if node and media_plane is None:
        beat(store, clock)
    settings = settings_for(twilio, **overrides)
    app = create_app(settings, store, twilio=twilio_client, clock=clock, media_plane=media_plane, outbound=outbound,
                     end_of_call=end_of_call)  # fmt: skip
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # a 500 reaches the test as a server sends it
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.app = app  # type: ignore[attr-defined]
        client.clock = clock  # type: ignore[attr-defined]
        yield client


def app_of(api: httpx.AsyncClient) -> FastAPI:
    app: FastAPI = api.app  # type: ignore[attr-defined]
    return app


def signed(path: str, form: dict[str, str], token: str = AUTH_TOKEN) -> dict[str, Any]:
    signature = RequestValidator(token).compute_signature(PUBLIC + path, form)
    return {
        "content": urlencode(form),
        "headers": {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
    }


async def make_call(api: httpx.AsyncClient, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return await api.post(
        "/make-call", json=body or {"destination_number": "+15551230000"}, headers={**AUTH, **headers}
    )


def advance(api: httpx.AsyncClient, seconds: float = 2.0) -> None:
    api.clock.now += seconds  # type: ignore[attr-defined]


class FlakyStore:
    """A real store whose chosen methods fail: `fail["complete_idempotency_key"] = 2` fails the next two calls,
    -1 fails every call. Everything else goes through to the real store."""

    def __init__(self, real: CallStore) -> None:
        self.real = real
        self.fail: dict[str, int] = {}
        self.failed: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            left = self.fail.get(name, 0)
            if left:
                self.fail[name] = left - 1 if left > 0 else left
                self.failed[name] = self.failed.get(name, 0) + 1
                raise OSError(f"store unavailable (test): {name}")
            return method(*args, **kwargs)

        return call
