"""`create_app()`: the control API as one FastAPI app, for Lambda (handler.py) and the all-in-one server."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from call_state import __version__ as VERSION
from call_state.async_store import AsyncCallStore
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.twilio_rest import TwilioRestClient
from lambda_api import browser_calls, calls, console_routes, webhooks
from lambda_api.context import ControlContext
from lambda_api.errors import install_error_handlers

log = logging.getLogger("lambda_api.requests")


def create_app(
    settings: Settings,
    store: CallStore | AsyncCallStore,
    twilio: TwilioRestClient | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    app = FastAPI(title="Phone voice agent: control API", version=VERSION, docs_url=None, redoc_url=None)
    async_store = store if isinstance(store, AsyncCallStore) else AsyncCallStore(store)
    app.state.ctx = ControlContext(settings, async_store, twilio, clock)
    install_error_handlers(app)
    app.include_router(calls.router)
    app.include_router(webhooks.router)
    app.include_router(browser_calls.router)
    app.include_router(console_routes.router)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": VERSION, "missing_credentials": settings.missing_credentials()})

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The path carries the call id; headers and bodies (keys, tokens, numbers) are never logged.
        log.info("%s %s %s %.1f ms", request.method, request.url.path[:200], response.status_code,
                 (time.perf_counter() - started) * 1000)  # fmt: skip
        return response

    return app
