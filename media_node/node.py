"""The media node: what all calls on this process share (settings, store, metrics, limits, drain state)."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from call_state.async_store import AsyncCallStore
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from media_node.metrics import MediaMetrics
from media_node.store_writer import StoreWriter
from media_node.stream_auth import StreamGate

log = logging.getLogger(__name__)


def console_origins(settings: Settings) -> frozenset[str]:
    """Origins whose pages may open /browser-stream: the console's (PUBLIC_URL), and loopback for `make run`."""
    parts = urlsplit(settings.public_url)
    origins = {f"{parts.scheme}://{parts.netloc}"}
    origins |= {f"http://{host}:{settings.port}" for host in ("127.0.0.1", "localhost")}
    return frozenset(origins)


class MediaNode:
    def __init__(
        self,
        settings: Settings,
        store: CallStore | AsyncCallStore,
        twilio: TwilioRestClient | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if isinstance(store, AsyncCallStore) else AsyncCallStore(store)
        if twilio is None and settings.twilio_account_sid and settings.twilio_auth_token:
            twilio = TwilioRestClient(
                settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url
            )
        self.twilio = twilio
        secret = settings.stream_token_secret.encode()
        self.gate = StreamGate(
            tokens=StreamTokens(secret) if len(secret) >= 16 else None,
            auth_token=settings.twilio_auth_token,
            stream_url=settings.media_stream_url,
            account_sid=settings.twilio_account_sid,
        )
        if self.gate.tokens is None:
            log.error("STREAM_TOKEN_SECRET is not set: every media stream will be refused")
        self.console_origins = console_origins(settings)
        self.metrics = MediaMetrics()
        self.writer = StoreWriter()
        self.active_calls = 0
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    def admit(self) -> str | None:
        """None if a new stream may start, else why not."""
        if self.draining:
            return "draining"
        if self.active_calls >= self.settings.max_concurrent_calls:
            return "at capacity"
        return None

    def call_started(self) -> None:
        self.active_calls += 1
        self.metrics.active_calls.set(self.active_calls)
        self._idle.clear()

    def call_ended(self, outcome: str) -> None:
        self.active_calls -= 1
        self.metrics.active_calls.set(self.active_calls)
        self.metrics.calls.labels(outcome=outcome).inc()
        if self.active_calls == 0:
            self._idle.set()

    def start_drain(self) -> None:
        if not self.draining:
            log.info("draining: refusing new streams, %d calls in progress", self.active_calls)
        self.draining = True

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for calls in progress to finish; False if some were still running at the deadline."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("drain grace of %.0f s over with %d calls still active", timeout, self.active_calls)
            return False
        log.info("drained in %.1f s", time.monotonic() - started)
        await self.writer.flush()
        return True

    def health(self) -> tuple[int, dict[str, object]]:
        body: dict[str, object] = {
            "status": "draining" if self.draining else "ok",
            "active_calls": self.active_calls,
            "missing_credentials": self.settings.missing_credentials(),
        }
        return (503 if self.draining else 200), body
