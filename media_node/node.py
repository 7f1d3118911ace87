"""The media node: what all calls on this process share (settings, store, Gemini connector, metrics, store
writer, admission counts, drain state), and the node's own background work while it runs."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from urllib.parse import urlsplit

from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall, end_of_call_for
from call_state.outbound import OutboundClient, outbound_client
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.sweeper import StoreSweeper
from call_state.tokens import StreamTokens
from call_state.twilio_rest import TwilioRestClient
from media_node.admission import Admission
from media_node.call_phase import CallOutcome
from media_node.gemini_connection import GeminiConnector, WebSocketConnector
from media_node.heartbeat import HeartbeatPublisher, node_snapshot
from media_node.metrics import MediaMetrics
from media_node.store_writer import StoreWriter
from media_node.stream_auth import StreamGate
from media_node.task_scope import TaskScope

log = logging.getLogger(__name__)


def tune_gc() -> None:
    """For a process that carries calls (entry points call it once, after start-up): the objects made at start-up
    leave the collector's view (`gc.freeze`), and the young generation is collected every 50,000 allocations instead
    of 700. Most of a call's objects die by reference counting anyway; what this removes is most of the collection
    pauses that land on a call's audio at high load (the p99 tail in bench/load_bench.py at hundreds of calls)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def console_origins(settings: Settings) -> frozenset[str]:
    """Origins whose pages may open /browser-stream: the console's (PUBLIC_URL, CONSOLE_ORIGINS), and loopback for
    `make run`."""
    parts = urlsplit(settings.public_url)
    origins = {f"{parts.scheme}://{parts.netloc}", *settings.console_origins}
    origins |= {f"http://{host}:{settings.port}" for host in ("127.0.0.1", "localhost")}
    return frozenset(origins)


class MediaNode:
    def __init__(
        self,
        settings: Settings,
        store: CallStore | AsyncCallStore,
        twilio: TwilioRestClient | None = None,
        connector: GeminiConnector | None = None,
        node_id: str = "",
        outbound: OutboundClient | None = None,
        end_of_call: EndOfCall | None = None,
    ) -> None:
        self.settings = settings
        self.store = store if isinstance(store, AsyncCallStore) else AsyncCallStore(store)
        if twilio is None and settings.twilio_account_sid and settings.twilio_auth_token:
            twilio = TwilioRestClient(
                settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url
            )
        self.twilio = twilio
        self.connector = connector or WebSocketConnector(settings.gemini_live_url, settings.gemini_api_key)
        # The user's tools (signed requests); without WEBHOOK_SECRET tool calls answer Gemini with an error.
        self.outbound = outbound or outbound_client(settings)
        # Where the node says a call's media side is done (its last turns and figures are written): the control
        # plane's status callback is the other side, and whichever completes the pair queues the webhook.
        self.end_of_call = end_of_call or end_of_call_for(settings, self.store)
        self.node_id = node_id or settings.node_id  # NODE_ID, default hostname:port (what claims and heartbeats say)
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
        self.writer = StoreWriter(on_lost=self.metrics.store_writes_lost.inc)
        self.admission = Admission(settings.max_concurrent_calls)
        self._idle = asyncio.Event()
        self._idle.set()
        self.heartbeat = HeartbeatPublisher(
            self.store, lambda: node_snapshot(self, replace(settings, node_id=self.node_id))
        )
        self._scope: TaskScope | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[MediaNode]:
        """The node's background work for as long as the server runs: the store writer, the heartbeat the control
        plane reads (drain, configuration, capacity), and the sweep of expired calls."""
        async with TaskScope() as scope:
            self._scope = scope
            scope.spawn(self.writer.run(), name="store-writer")
            scope.spawn(self.heartbeat.run(), name="heartbeat")
            scope.spawn(StoreSweeper(self.store).run(), name="store-sweep")
            try:
                yield self
            finally:
                if not await self.writer.flush():
                    log.error("stopping with %d store writes lost", self.writer.abandon())
                await self.heartbeat.publish_now()  # the last word: draining, no calls
                self._scope = None
                scope.cancel()

    # --- admission ------------------------------------------------------------------------------------------
    def accept_socket(self) -> str | None:
        """An upgrade arrives: None if it may show its `start`, else why not (answered before accept)."""
        refusal = self.admission.open_socket()
        self.metrics.pending_streams.set(self.admission.pending)
        return refusal

    def call_refused(self) -> None:
        self.admission.socket_decided()
        self.metrics.pending_streams.set(self.admission.pending)

    def call_admitted(self) -> None:  # the intake reserved the slot
        self.admission.socket_decided()
        self.metrics.pending_streams.set(self.admission.pending)
        self.metrics.active_calls.set(self.admission.active)
        self._idle.clear()

    def call_ended(self, outcome: CallOutcome) -> None:
        self.admission.call_ended()
        self.metrics.active_calls.set(self.admission.active)
        self.metrics.calls.labels(outcome=outcome.value).inc()
        if self.admission.active == 0:
            self._idle.set()

    async def transfer(self, call_sid: str, number: str) -> None:
        """Hand a live phone call to a person: Twilio <Dial>s the number (the stream ends)."""
        if self.twilio is None:
            raise RuntimeError("no Twilio credentials on this node")
        await self.twilio.transfer(call_sid, number, caller_id=self.settings.twilio_phone_number)

    @property
    def active_calls(self) -> int:
        return self.admission.active

    @property
    def draining(self) -> bool:
        return self.admission.draining

    # --- drain and health -----------------------------------------------------------------------------------
    def start_drain(self) -> None:
        if self.admission.start_drain(time.time()):
            log.info("draining: new calls go elsewhere, %d calls in progress finish", self.active_calls)
            if self._scope is not None:  # tell the control plane now, not at the next beat
                self._scope.spawn(self.heartbeat.publish_now(), name="heartbeat-drain")

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for calls in progress to finish, then for their store writes; False at the deadline."""
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
        """503 while draining or full (a load balancer then sends new streams elsewhere)."""
        if self.draining:
            status = "draining"
        elif self.admission.full:
            status = "full"
        elif not (self.settings.gemini_api_key and self.gate.tokens is not None):
            status = "not_configured"
        else:
            status = "ok"
        code = 503 if status in ("draining", "full") else 200
        return code, {"status": status, "active_calls": self.active_calls, "capacity": self.admission.max_calls}
