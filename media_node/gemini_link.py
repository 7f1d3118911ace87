"""The WebSocket to Gemini Live: connect, send `setup`, wait for `setupComplete`. Thin asyncio, no protocol logic.

Failures become `GeminiUnavailable` with the reason a human needs (Google's close reason is the only diagnostic:
bad key, unknown model, quota), never with the API key in it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import ClientConnection, connect

from media_node.gemini_session import GeminiEvent, GeminiSession, Malformed

SETUP_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 8 * 1024 * 1024


class GeminiUnavailable(Exception):
    """Gemini could not be reached or refused the session; the message says why."""


@dataclass
class GeminiLink:
    ws: ClientConnection
    connect_seconds: float
    early_events: list[GeminiEvent]  # anything that arrived together with setupComplete
    closed_reason: str = ""  # set by the reader when the socket ends


async def open_link(url: str, api_key: str, session: GeminiSession, setup_frame: str) -> GeminiLink:
    started = time.monotonic()
    try:
        ws = await connect(
            url,
            additional_headers={"x-goog-api-key": api_key},
            compression=None,  # audio does not compress; deflate only costs CPU
            max_size=MAX_FRAME_BYTES,
            open_timeout=SETUP_TIMEOUT_S,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,  # a Gemini that does not answer our close must not hold the call's teardown
        )
    except websockets.InvalidStatus as exc:
        raise GeminiUnavailable(f"Gemini refused the connection: HTTP {exc.response.status_code}") from exc
    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
        raise GeminiUnavailable(f"Gemini unreachable: {type(exc).__name__}: {exc}") from exc
    try:
        await ws.send(setup_frame)
        async with asyncio.timeout(SETUP_TIMEOUT_S):
            while True:
                events = session.receive(await ws.recv())
                bad = [e for e in events if isinstance(e, Malformed)]
                if bad:
                    raise GeminiUnavailable(f"Gemini answered setup with {bad[0].reason}")
                if session.setup_complete:
                    return GeminiLink(ws, time.monotonic() - started, events)
    except websockets.ConnectionClosed as exc:
        await ws.close()
        code = exc.rcvd.code if exc.rcvd else 1006
        reason = exc.rcvd.reason if exc.rcvd else "no close frame"
        raise GeminiUnavailable(f"Gemini closed the session during setup: {code} {reason}") from exc
    except TimeoutError as exc:
        await ws.close()
        raise GeminiUnavailable(f"Gemini sent no setupComplete within {SETUP_TIMEOUT_S:.0f} s") from exc
    except GeminiUnavailable:
        await ws.close()
        raise


def close_reason(exc: websockets.ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "connection lost (no close frame)"
    return f"{exc.rcvd.code} {exc.rcvd.reason}".strip()
