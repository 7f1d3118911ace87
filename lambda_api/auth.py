"""Who may call what: the bearer API key for users, Twilio's signature for webhooks.

The URL Twilio signed is the public one. `PUBLIC_URL` wins when configured (custom domain, Nginx, a named
stage: include its path prefix); with no PUBLIC_URL under Lambda it is rebuilt from the API Gateway event
(`https://{domainName}{rawPath}?{rawQueryString}`), which already carries any stage prefix.
"""

from __future__ import annotations

import hmac

from fastapi import Request
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

from lambda_api.context import ControlContext
from lambda_api.errors import ApiError
from lambda_api.limits import FORM_TYPE, content_type, parse_form


def require_api_key(request: Request, ctx: ControlContext) -> str:
    """Return the caller's key (it scopes idempotency and pacing), or raise 401/503."""
    expected = ctx.settings.api_key
    if not expected:
        raise ApiError(503, "not_configured", "API_KEY is not set: the call API is disabled")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "unauthorized", "missing or invalid bearer API key")
    return given.strip()


def _api_gateway_event(request: Request, ctx: ControlContext) -> dict[str, object] | None:
    """The v2 event, when PUBLIC_URL was left at its local default under Lambda."""
    event = request.scope.get("aws.event")
    if isinstance(event, dict) and event.get("version") == "2.0" and ctx.settings.public_url.startswith("http://127."):
        return event
    return None


def _domain(event: dict[str, object]) -> str:
    context = event.get("requestContext")
    return str(context.get("domainName", "")) if isinstance(context, dict) else ""


def public_base(request: Request, ctx: ControlContext) -> str:
    """Base URL for the webhook URLs we hand to Twilio."""
    event = _api_gateway_event(request, ctx)
    if event is None:
        return ctx.settings.public_url.rstrip("/")
    domain = _domain(event)
    raw_path, path = str(event.get("rawPath", "")), request.url.path
    prefix = raw_path[: -len(path)] if raw_path.endswith(path) else ""  # the stage, e.g. "/prod"
    return f"https://{domain}{prefix}"


def public_url(request: Request, ctx: ControlContext) -> str:
    """The exact URL Twilio signed for this request."""
    event = _api_gateway_event(request, ctx)
    if event is not None:
        domain = _domain(event)
        url, query = f"https://{domain}{event.get('rawPath', request.url.path)}", str(event.get("rawQueryString", ""))
    else:
        url = ctx.settings.public_url.rstrip("/") + request.url.path
        query = request.scope.get("query_string", b"").decode()
    return url + (f"?{query}" if query else "")


async def twilio_form(request: Request, ctx: ControlContext) -> FormData:
    """The webhook's form, after checking X-Twilio-Signature (403 when missing or wrong).

    Only `application/x-www-form-urlencoded` is read (415 otherwise: no multipart parser, no temp file), and only
    as far as BodyLimits allows (413); the form is parsed from those bytes here, never by Starlette.
    """
    token = ctx.settings.twilio_auth_token
    if not token:
        raise ApiError(503, "not_configured", "TWILIO_AUTH_TOKEN is not set: webhooks cannot be verified")
    if content_type(request.headers) != FORM_TYPE:
        raise ApiError(415, "unsupported_media_type", f"webhooks must be {FORM_TYPE}")
    form = parse_form(await request.body())
    signature = request.headers.get("x-twilio-signature", "")
    if not signature or not RequestValidator(token).validate(public_url(request, ctx), form, signature):
        raise ApiError(403, "bad_signature", "missing or invalid X-Twilio-Signature")
    return form
