"""Serve an ASGI app with uvicorn: our SIGTERM drain in front of uvicorn's shutdown, and limits on connections.

uvicorn's own shutdown closes live WebSockets at once (1012), which would cut every call. On the first SIGTERM
or SIGINT we only start draining (healthz 503, new streams refused) and wait for calls to end, up to
DRAIN_GRACE_SECONDS; then uvicorn shuts down. A second signal exits at once.

Limits for a port reached without Nginx (`make run`, a tunnel): uvicorn has a keep-alive timeout but no deadline
for a request head and no cap on open sockets, so `GuardedH11Protocol` adds both. A connection must send its
whole request head within HTTP_HEADER_TIMEOUT_SECONDS of connecting (or of its first byte after a keep-alive
pause); connections beyond MAX_CONNECTIONS are closed as they are accepted. The cap sits above the media node's
own bound on sockets waiting for `start` plus MAX_CONCURRENT_CALLS (settings.py checks it), so a WebSocket
flood meets the node's rules first. Closed connections are counted and logged at most once per 10 s.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time
from types import FrameType

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from call_state.settings import Settings
from media_node.node import MediaNode

log = logging.getLogger(__name__)


class ClosedTally:
    """Counts connections we closed, by reason; one log line per reason at most every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        self.every_s = every_s
        self.closed: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def note(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -self.every_s) >= self.every_s:
            log.warning("closed %d connection(s): %s", self._unlogged[reason], reason)
            self._logged_at[reason], self._unlogged[reason] = now, 0


def guarded_protocol(header_timeout_s: float, max_connections: int, tally: ClosedTally) -> type[H11Protocol]:
    class GuardedH11Protocol(H11Protocol):
        """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections."""

        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.server_state.connections) > max_connections:
                tally.note(f"over MAX_CONNECTIONS={max_connections}")
                transport.abort()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # a request head has begun (or the connection is new): it has a deadline
            else:
                self._disarm()  # the head is complete (a body, an upgrade or the response follows)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout_s, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                tally.note(f"no complete request head within {header_timeout_s:.0f} s")
                self.transport.close()

    return GuardedH11Protocol


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: MediaNode, grace_seconds: float) -> None:
        super().__init__(config)
        self.node = node
        self.grace_seconds = grace_seconds
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.node.draining or self._loop is None:
            log.warning("second signal %s: exiting now", signal.Signals(sig).name)
            self.force_exit = True
            self.should_exit = True
            return
        log.info("signal %s: draining up to %.0f s", signal.Signals(sig).name, self.grace_seconds)
        self.node.start_drain()
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        await self.node.wait_idle(self.grace_seconds)
        self.should_exit = True


def uvicorn_config(app: object, settings: Settings, tally: ClosedTally | None = None) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    protocol = guarded_protocol(settings.http_header_timeout_seconds, settings.max_connections, tally or ClosedTally())
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        loop=loop,
        http=protocol,
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # audio does not compress; deflate only costs CPU
        ws_max_size=256 * 1024,  # Twilio frames are ~330 bytes; bigger frames close that stream only
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_keep_alive=settings.http_keepalive_timeout_seconds,
        timeout_graceful_shutdown=5,
        log_level="info",
        lifespan="on",  # the media node's background work (store writer, heartbeat) runs in the app's lifespan
        access_log=False,
    )


def raise_open_files_limit(needed: int) -> None:
    """Each connection is a file descriptor: lift the soft limit toward the hard one so the cap, not EMFILE,
    decides. Says so when even the hard limit is below what MAX_CONNECTIONS needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        log.warning("open files limit %d is below MAX_CONNECTIONS + 100 = %d (raise LimitNOFILE)", hard, needed)


def run(app: object, settings: Settings, node: MediaNode) -> None:
    raise_open_files_limit(settings.max_connections + 100)
    server = DrainingServer(uvicorn_config(app, settings), node, settings.drain_grace_seconds)
    server.run()
