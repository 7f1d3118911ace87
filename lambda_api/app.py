"""`create_app()`: the control API as one FastAPI app, for Lambda (handler.py) and the all-in-one server."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from call_state import __version__ as VERSION
from call_state.async_store import AsyncCallStore
from call_state.call_end import EndOfCall, end_of_call_for
from call_state.nodes import PlaneState, live_window_seconds
from call_state.outbound import OutboundClient
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.twilio_rest import TwilioRestClient
from lambda_api import browser_calls, call_events, calls, console_routes, make_call, recordings, webhooks
from lambda_api.context import ControlContext
from lambda_api.errors import install_error_handlers
from lambda_api.idempotency import IdempotencyKeys
from lambda_api.limits import DEFAULT_MAX_BYTES, FORM_MAX_BYTES, JSON_MAX_BYTES, MAKE_CALL_MAX_BYTES, BodyLimits
from lambda_api.media_plane import MediaPlane, StoreMediaPlane
from lambda_api.pacing import CallPacing

log = logging.getLogger("lambda_api.requests")
_WEBHOOKS = ("/twiml/", "/status/", "/stream-status/", "/incoming", "/amd/", "/recording/")


def body_limit(path: str) -> int:
    if path == "/make-call":
        return MAKE_CALL_MAX_BYTES
    if path == "/browser-calls":
        return JSON_MAX_BYTES
    if path.startswith(_WEBHOOKS):
        return FORM_MAX_BYTES
    return DEFAULT_MAX_BYTES


class AccessLog:
    """One line per request: method, path (it carries the call id), status, time. Never headers or bodies."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), [0]

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            log.info("%s %r %s %.1f ms", scope["method"], scope["path"][:200], status[0] or "-",
                     (time.perf_counter() - started) * 1000)  # fmt: skip


def create_app(
    settings: Settings,
    store: CallStore | AsyncCallStore,
    twilio: TwilioRestClient | None = None,
    clock: Callable[[], float] = time.time,
    media_plane: MediaPlane | None = None,
    outbound: OutboundClient | None = None,
    end_of_call: EndOfCall | None = None,
) -> FastAPI:
    """`media_plane` defaults to the nodes' heartbeats in the store (Lambda); all-in-one passes its own node.
    `outbound` (URL checks) defaults to the client WEBHOOK_SECRET makes; `end_of_call` to SQS when
    WEBHOOK_QUEUE_URL is set, else the store's outbox."""
    app = FastAPI(title="Phone voice agent: control API", version=VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    async_store = store if isinstance(store, AsyncCallStore) else AsyncCallStore(store)
    ctx = ControlContext(
        settings,
        async_store,
        media_plane or StoreMediaPlane(async_store),
        CallPacing(async_store, settings.make_call_rate_per_min),
        IdempotencyKeys(async_store, clock),
        end_of_call or end_of_call_for(settings, async_store),
        twilio,
        outbound,
        clock,
    )
    app.state.ctx = ctx
    install_error_handlers(app)
    app.include_router(make_call.router)
    app.include_router(calls.router)
    app.include_router(webhooks.router)
    app.include_router(call_events.router)
    app.include_router(recordings.router)
    app.include_router(browser_calls.router)
    app.include_router(console_routes.router)
    app.add_middleware(BodyLimits, limit_for=body_limit)
    app.add_middleware(AccessLog)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """200 whenever this control plane can serve (it reads the store); the media plane's state in the body.
        Names no credential: what is missing goes to the start-up log and the authenticated /make-call 503."""
        now = clock()
        try:
            admission = await ctx.media_plane.admission(now)
            live = await ctx.store.count_live_calls(now - live_window_seconds(settings.max_call_seconds), now)
        except Exception as exc:  # the store is down: this control plane cannot serve
            log.error("healthz: store unavailable: %s", type(exc).__name__)
            return JSONResponse({"status": "store_unavailable", "version": VERSION}, status_code=503)
        if ctx.control_missing() or not settings.api_key or admission.state is PlaneState.NOT_CONFIGURED:
            status = "not_configured"
        elif admission.state is PlaneState.DRAINING:
            status = "draining"
        else:
            status = "ok"
        body = {"status": status, "version": VERSION, "active_calls": live, "media_plane": admission.state.value,
                "media_nodes": admission.nodes, "capacity": admission.capacity}  # fmt: skip
        return JSONResponse(body)

    return app
