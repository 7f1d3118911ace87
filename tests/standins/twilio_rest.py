"""A loopback stand-in for Twilio's REST API (Calls create and update, Recordings media), over real HTTP.

A threading HTTP server on 127.0.0.1 so it serves sync callers (Mangum) and async ones alike. It checks Basic
auth, records every form it receives (repeated fields such as StatusCallbackEvent kept as lists: the AMD and
recording fields of a create, the Twiml of an update), answers like Twilio (201 with a CA sid) or with a
configured Twilio error, counts dials, and serves recordings' audio (`.wav` / `.mp3`) put in `recordings`.

    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        settings = replace(settings, twilio_api_base_url=twilio.base_url)
        twilio.recordings["RE..."] = b"RIFF..."
        ...
        assert twilio.dials == 1 and twilio.created[0]["To"] == ["+1555..."]
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default listen backlog of 5 resets bursts of simultaneous dials


class TwilioRestStandIn:
    def __init__(self, account_sid: str, auth_token: str, delay_s: float = 0.0) -> None:
        self.account_sid, self.auth_token, self.delay_s = account_sid, auth_token, delay_s
        self.created: list[dict[str, list[str]]] = []
        self.updates: list[tuple[str, dict[str, list[str]]]] = []
        self.error: tuple[int, dict[str, Any]] | None = None  # answer every create with this
        self.update_error: tuple[int, dict[str, Any]] | None = None  # answer every update (hang-up, transfer) with this
        self.recordings: dict[str, bytes] = {}  # RecordingSid -> audio, served as .wav and .mp3
        self.media_requests: list[tuple[str, str]] = []  # (path, Authorization header) of every recording fetch
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def dials(self) -> int:
        return len(self.created)

    def __enter__(self) -> TwilioRestStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def _authorised(self) -> bool:
                expected = base64.b64encode(f"{standin.account_sid}:{standin.auth_token}".encode()).decode()
                if self.headers.get("Authorization") == f"Basic {expected}":
                    return True
                self._answer(401, {"code": 20003, "message": "Authenticate", "status": 401})
                return False

            def do_GET(self) -> None:
                with standin._lock:
                    standin.media_requests.append((self.path, self.headers.get("Authorization", "")))
                if not self._authorised():
                    return
                base = re.escape(f"/2010-04-01/Accounts/{standin.account_sid}/Recordings/")
                match = re.fullmatch(base + r"(RE[0-9a-f]{32})\.(wav|mp3)", self.path)
                audio = standin.recordings.get(match.group(1)) if match else None
                if match is None or audio is None:
                    self._answer(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "audio/x-wav" if match.group(2) == "wav" else "audio/mpeg")
                    self.send_header("Content-Length", str(len(audio)))
                    self.end_headers()
                    self.wfile.write(audio)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_POST(self) -> None:
                if not self._authorised():
                    return
                form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                base = f"/2010-04-01/Accounts/{standin.account_sid}/Calls"
                if self.path == f"{base}.json":
                    if standin.error is not None:
                        time.sleep(standin.delay_s)
                        self._answer(*standin.error)
                        return
                    with standin._lock:  # Twilio has the call from here on, however late its answer comes
                        standin.created.append(form)
                        sid = f"CA{len(standin.created):032x}"
                    time.sleep(standin.delay_s)
                    self._answer(201, {"sid": sid, "status": "queued", "to": form.get("To", [""])[0]})
                    return
                match = re.fullmatch(re.escape(base) + r"/(CA[0-9a-f]{32})\.json", self.path)
                if match:
                    with standin._lock:
                        standin.updates.append((match.group(1), form))
                    if standin.update_error is not None:
                        self._answer(*standin.update_error)
                        return
                    self._answer(200, {"sid": match.group(1), "status": form.get("Status", ["in-progress"])[0]})
                    return
                self._answer(404, {"code": 20404, "message": "The requested resource was not found", "status": 404})

        return Handler
