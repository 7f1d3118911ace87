"""Serve an ASGI app with uvicorn, with our SIGTERM drain in front of uvicorn's shutdown.

uvicorn's own shutdown closes live WebSockets at once (1012), which would cut every call. On the first SIGTERM
or SIGINT we only start draining (healthz 503, new streams refused) and wait for calls to end, up to
DRAIN_GRACE_SECONDS; then uvicorn shuts down. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from call_state.settings import Settings
from media_node.node import MediaNode

log = logging.getLogger(__name__)


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


def uvicorn_config(app: object, settings: Settings) -> uvicorn.Config:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port,
        loop=loop,
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # audio does not compress; deflate only costs CPU
        ws_max_size=256 * 1024,  # Twilio frames are ~330 bytes; bigger frames close that stream only
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        timeout_graceful_shutdown=5,
        log_level="info",
        lifespan="on",  # the media node's background work (store writer, heartbeat) runs in the app's lifespan
        access_log=False,
    )


def run(app: object, settings: Settings, node: MediaNode) -> None:
    server = DrainingServer(uvicorn_config(app, settings), node, settings.drain_grace_seconds)
    server.run()
