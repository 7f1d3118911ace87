"""AWS Lambda entry point: Mangum over the same FastAPI app (API Gateway HTTP API, payload v2).

Settings, secrets (Secrets Manager ARNs in `<NAME>_SECRET_ARN`) and the store are built once per container,
on the first invocation, so importing this module stays cheap (no numpy, no Twilio client, no AWS calls).
A bad configuration fails that first invocation with one line naming the variable.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mangum import Mangum

from call_state.secrets import resolve_secret_arns
from call_state.settings import Settings
from call_state.store import open_store
from lambda_api.app import create_app

logging.getLogger().setLevel(logging.INFO)
log = logging.getLogger("lambda_api.handler")
_adapter: Mangum | None = None


def _build() -> Mangum:
    settings = Settings.from_env(resolve_secret_arns(os.environ))
    store = open_store(settings.call_store, dynamodb_endpoint_url=settings.dynamodb_endpoint_url,
                       region=settings.aws_region)  # fmt: skip
    if not settings.webhook_queue_url:  # the CDK app always sets it
        log.warning("WEBHOOK_QUEUE_URL is not set: end-of-call webhooks wait in the store's outbox, which only an "
                    "all-in-one server delivers")  # fmt: skip
    base_path = os.environ.get("API_BASE_PATH", "/")  # a named stage, e.g. "/prod"
    return Mangum(create_app(settings, store), lifespan="off", api_gateway_base_path=base_path)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _adapter
    if _adapter is None:
        _adapter = _build()
    result: dict[str, Any] = _adapter(event, context)
    return result


def reset() -> None:
    """Forget the built app (tests change the environment between cases)."""
    global _adapter
    _adapter = None
