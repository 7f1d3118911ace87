"""The all-in-one server: control API and media node in one process (`make run`, the VPS default).

`lambda_api` and `media_node` never import each other; this module is the only place that joins them: the
control API asks the in-process node whether a dial would be bridged (drain, configuration, capacity), the media
node's /healthz speaks for both planes, and the background work runs in the server's lifespan: the node's (store
writes, heartbeat, the store's sweep) and the end-of-call webhooks' (the store outbox's worker).
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace

from starlette.applications import Starlette
from starlette.routing import Mount

from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall, end_of_call_for
from call_state.local_setup import public_url_warning, with_local_api_key, with_local_webhook_secret
from call_state.outbound import outbound_client
from call_state.settings import Settings, startup_settings
from call_state.store import CallStore, open_store_or_exit
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_outbox import StoreOutbox
from call_state.webhook_worker import OutboxWorker
from lambda_api.app import create_app
from lambda_api.media_plane import LocalMediaPlane
from media_node.app import media_routes
from media_node.heartbeat import node_snapshot
from media_node.node import MediaNode, tune_gc
from media_node.server import run
from media_node.task_scope import TaskScope

log = logging.getLogger("all_in_one")


def main() -> None:
    settings = startup_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    store = open_store_or_exit(settings.call_store, time.time(), dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                               region=settings.aws_region)  # fmt: skip
    if not settings.stream_token_secret:
        # Both planes share this process, so a per-process secret is safe here (never for split deployments).
        settings = replace(settings, stream_token_secret=secrets.token_urlsafe(32))
        log.warning("STREAM_TOKEN_SECRET not set: using a random one for this process (all-in-one only)")
    try:
        settings, console_line = with_local_api_key(settings)
        settings = with_local_webhook_secret(settings)
    except (OSError, ValueError) as exc:  # data/ not writable, or a damaged key file: one line, like config errors
        print(f"config error: API_KEY or WEBHOOK_SECRET is not set and {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(settings, store, console_line)


def build_app(settings: Settings, store: CallStore) -> tuple[Starlette, MediaNode]:
    """The media routes first (/stream, /browser-stream, /healthz for both planes, /metrics), then the control API."""
    async_store, outbound = AsyncCallStore(store), outbound_client(settings)
    end_of_call, worker = end_of_call_for(settings, async_store), None
    if isinstance(end_of_call.outbox, StoreOutbox):  # else SQS (WEBHOOK_QUEUE_URL) and its consumer deliver
        worker = OutboxWorker(async_store, WebhookDelivery(async_store, outbound))
        end_of_call = EndOfCall(async_store, StoreOutbox(async_store, on_enqueued=worker.wake))
    node = MediaNode(settings, async_store, outbound=outbound, end_of_call=end_of_call)
    missing = "" if settings.gemini_api_key else "GEMINI_API_KEY is not set"
    plane = LocalMediaPlane(lambda: node_snapshot(node, settings), not_configured_detail=missing)
    control = create_app(settings, node.store, twilio=node.twilio, media_plane=plane, outbound=node.outbound,
                         end_of_call=end_of_call)  # fmt: skip
    app = Starlette(routes=[*media_routes(node), Mount("/", app=control)], lifespan=server_lifespan(node, worker))
    app.state.node = node
    return app, node


def server_lifespan(
    node: MediaNode, worker: OutboxWorker | None
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The node's background work, and the webhook outbox's worker, for as long as the server runs."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with node.running(), TaskScope() as scope:
            if worker is not None:
                scope.spawn(worker.run(), name="webhook-outbox")
            try:
                yield
            finally:
                scope.cancel()  # jobs not yet delivered stay in the store for the next start

    return lifespan


def serve(settings: Settings, store: CallStore, console_line: str = "") -> None:
    app, node = build_app(settings, store)
    tune_gc()
    missing = settings.missing_credentials()
    if missing:
        log.warning("missing credentials: %s (the server runs; /make-call answers 503)", ", ".join(missing))
    unreachable = public_url_warning(settings)
    if unreachable:
        log.warning("%s", unreachable)
    log.info("all-in-one server on http://%s:%d (public %s)", settings.host, settings.port, settings.public_url)
    if console_line:
        log.info("%s", console_line)
    run(app, settings, node)


if __name__ == "__main__":
    main()
