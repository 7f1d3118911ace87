"""The all-in-one server: control API and media node in one process (`make run`, the VPS default).

`lambda_api` and `media_node` never import each other; this module is the only place that joins them: the
control API asks the in-process node whether a dial would be bridged (drain, configuration, capacity), one
/healthz speaks for both planes, and the store sweep runs in the server's lifespan.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from call_state import __version__ as VERSION
from call_state.settings import Settings, startup_settings
from call_state.store import CallStore, open_store_or_exit
from call_state.sweeper import StoreSweeper
from lambda_api.app import create_app
from lambda_api.media_plane import LocalMediaPlane
from media_node.app import media_routes
from media_node.heartbeat import node_configured, node_snapshot
from media_node.node import MediaNode
from media_node.server import run

log = logging.getLogger("all_in_one")


def main() -> None:
    settings = startup_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    store = open_store_or_exit(settings.call_store, time.time(), dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                               region=settings.aws_region)  # fmt: skip
    if not settings.stream_token_secret:
        # Both planes share this process, so a per-process secret is safe here (never for split deployments).
        from dataclasses import replace

        settings = replace(settings, stream_token_secret=secrets.token_urlsafe(32))
        log.warning("STREAM_TOKEN_SECRET not set: using a random one for this process (all-in-one only)")
    serve(settings, store)


def build_app(settings: Settings, store: CallStore) -> tuple[Starlette, MediaNode]:
    """/healthz for both planes, the media routes (/stream, /metrics, ...), then the control API."""
    node = MediaNode(settings, store)
    missing = "" if settings.gemini_api_key else "GEMINI_API_KEY is not set"
    plane = LocalMediaPlane(lambda: node_snapshot(node, settings), not_configured_detail=missing)
    control = create_app(settings, node.store, twilio=node.twilio, media_plane=plane)

    async def healthz(request: Request) -> JSONResponse:
        """The media node's rule (503 while draining) and its active calls; no credential names (public)."""
        code, body = node.health()
        status = body.get("status", "ok")
        if status == "ok" and not node_configured(settings):
            status = "not_configured"
        return JSONResponse({"status": status, "active_calls": node.active_calls, "version": VERSION},
                            status_code=code)  # fmt: skip

    routes = [Route("/healthz", healthz), *media_routes(node), Mount("/", app=control)]
    app = Starlette(routes=routes, lifespan=background_work(node))
    app.state.node = node
    return app, node


def background_work(node: MediaNode) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The server's lifespan: the store sweep (expired rows, every 5 minutes) runs while the server does."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with asyncio.TaskGroup() as tasks:
            sweep = tasks.create_task(StoreSweeper(node.store).run(), name="store-sweep")
            try:
                yield
            finally:
                sweep.cancel()

    return lifespan


def serve(settings: Settings, store: CallStore) -> None:
    app, node = build_app(settings, store)
    missing = settings.missing_credentials()
    if missing:
        log.warning("missing credentials: %s (the server runs; /make-call answers 503)", ", ".join(missing))
    log.info("all-in-one server on http://%s:%d (public %s)", settings.host, settings.port, settings.public_url)
    run(app, settings, node)


if __name__ == "__main__":
    main()
