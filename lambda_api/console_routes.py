"""`GET /console` and its assets: the web console, plain files from `lambda_api/console/` (no build step, no CDN).

The files live inside the package so the Lambda bundle carries them, and are read once at import. Only the files
found there are served (an allow-list by exact name, never a path joined from the URL). Every answer carries a
strict Content-Security-Policy: scripts, styles and the AudioWorklet from this origin only, no inline code, and
`connect-src` limited to this origin and the media node's origin (the browser call's WebSocket).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from lambda_api.browser_calls import browser_stream_url
from lambda_api.context import ctx_of
from lambda_api.errors import ApiError

router = APIRouter()
CONSOLE_DIR = Path(__file__).resolve().parent / "console"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _load(directory: Path) -> dict[str, Asset]:
    assets = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            assets[path.name] = Asset(body, TYPES[path.suffix], '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return assets


ASSETS = _load(CONSOLE_DIR)


def content_security_policy(media_stream_url: str) -> str:
    """The console's CSP; `connect-src` names the media node's WebSocket origin (another host on AWS)."""
    parts = urlsplit(browser_stream_url(media_stream_url))
    media_origin = f"{parts.scheme}://{parts.netloc}"
    return "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'", "media-src 'self' blob:",
        f"connect-src 'self' {media_origin}", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
    ])  # fmt: skip


def _serve(request: Request, name: str) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise ApiError(404, "not_found", "no such console file")
    headers = {
        "Content-Security-Policy": content_security_policy(ctx_of(request).settings.media_stream_url),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",  # revalidate (cheap, with the ETag): an upgrade never leaves a stale page
        "ETag": asset.etag,
    }
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/", include_in_schema=False)
async def root() -> Response:
    return RedirectResponse("console", status_code=302)  # relative: keeps an API Gateway stage prefix


@router.get("/console", include_in_schema=False)
async def console(request: Request) -> Response:
    return _serve(request, "index.html")


@router.get("/console/{name}", include_in_schema=False)
async def console_asset(name: str, request: Request) -> Response:
    return _serve(request, name if name != "index.html" else "")
