"""The web console in real headless Chromium against the real all-in-one app and the loopback stand-ins.

`console_app()` serves `all_in_one.build_app(settings, store)` with uvicorn on 127.0.0.1 (control API, console and
media node in one process, as `make run` does), pointed at a Gemini stand-in and the Twilio REST stand-in.
`chromium_page()` launches Debian's `/usr/bin/chromium` through Playwright (no browser download) with a fake
microphone playing a WAV, and records what the page does: every request, console errors, the Media Streams
frames it sends and receives (WebSocket wrapped by an init script) and the level of what it actually plays
(an AnalyserNode tapped in front of `AudioContext.destination`).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from all_in_one import build_app
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from media_node.node import MediaNode
from media_node.server import DrainingServer, uvicorn_config

API_KEY = "test-console-api-key-not-real-0123"
ACCOUNT_SID = "AC" + "5" * 32
AUTH_TOKEN = "test-auth-token-not-real"
SECRET = "test-stream-secret-not-real-0123456789"

RECORDER = """
(() => {
  const rec = window.__rec = { sent: [], received: [], media_sent: 0, levels: [], talk_at: null, constraints: [] };
  document.addEventListener("click", (e) => {
    if (e.target && e.target.id === "talk") rec.talk_at = performance.now();
  }, true);
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      const m = JSON.parse(data);
      if (m.event === "media") rec.media_sent += 1;
      else rec.sent.push({ t: performance.now(), event: m.event, name: m.mark ? m.mark.name : null, m });
    } catch (e) { rec.sent.push({ t: performance.now(), event: "not-json" }); }
    return send.call(this, data);
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (e) => {
        const m = JSON.parse(e.data);
        rec.received.push({ t: performance.now(), event: m.event, name: m.mark ? m.mark.name : null,
                            bytes: m.media ? atob(m.media.payload).length : 0 });
      });
    }
  };
  const gum = MediaDevices.prototype.getUserMedia;
  MediaDevices.prototype.getUserMedia = function (c) { rec.constraints.push(c); return gum.call(this, c); };
  const connect = AudioNode.prototype.connect;
  AudioNode.prototype.connect = function (target, ...rest) {
    if (target instanceof AudioDestinationNode) {
      const analyser = this.context.createAnalyser();
      analyser.fftSize = 512;
      connect.call(this, analyser);
      const buf = new Float32Array(analyser.fftSize);
      setInterval(() => {
        analyser.getFloatTimeDomainData(buf);
        let sum = 0;
        for (const x of buf) sum += x * x;
        rec.levels.push([performance.now(), Math.sqrt(sum / buf.length)]);
      }, 10);
    }
    return connect.call(this, target, ...rest);
  };
})();
"""


def find_chromium() -> str | None:
    """Debian's chromium (`make test` installs it as root); never a browser Playwright would download."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@dataclass
class ConsoleApp:
    settings: Settings
    store: SqliteCallStore
    node: MediaNode
    base: str

    async def calls_done(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while self.node.active_calls:
                await asyncio.sleep(0.02)
        await self.node.writer.flush()


@asynccontextmanager
async def console_app(tmp_path: Path, gemini_url: str, twilio_url: str, **overrides: Any) -> AsyncIterator[ConsoleApp]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_PHONE_NUMBER": "+15550001111",
        "TWILIO_API_BASE_URL": twilio_url, "GEMINI_API_KEY": "test-gemini-key-not-real", "GEMINI_LIVE_URL": gemini_url,
        "API_KEY": API_KEY, "STREAM_TOKEN_SECRET": SECRET, "ALLOWED_DESTINATIONS": "+1", "HOST": "127.0.0.1",
        "PORT": str(port), "CALL_STORE": f"sqlite:///{tmp_path / 'calls.db'}",
    }  # fmt: skip
    settings = replace(Settings.from_env(env), **overrides)
    store = SqliteCallStore(str(tmp_path / "calls.db"))
    app, node = build_app(settings, store)
    server = DrainingServer(uvicorn_config(app, settings), node, 5)
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield ConsoleApp(settings, store, node, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True  # graceful: sockets close, the node's lifespan flushes its writes and heartbeat
        await asyncio.wait_for(task, 15)
        store.close()


@dataclass
class PageLog:
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def chromium_page(wav: Path, log: PageLog, executable: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=[
            "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}",  # no autoplay override: the page must get audio from Talk
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
        ])  # fmt: skip
        try:
            context = await browser.new_context(viewport={"width": 1180, "height": 900})
            page = await context.new_page()
            await page.add_init_script(RECORDER)
            page.on("request", lambda r: log.requests.append(r.url))
            page.on("websocket", lambda ws: log.requests.append(ws.url))
            page.on("console", lambda m: m.type == "error" and log.errors.append(m.text))
            page.on("pageerror", lambda e: log.errors.append(f"pageerror: {e}"))
            yield page
        finally:
            await browser.close()


async def sign_in(page: Any, base: str, key: str = API_KEY) -> None:
    await page.goto(f"{base}/console")
    await page.fill("#api-key", key)
    await page.click("#sign-in")


def browser_page(wav: Path, log: PageLog) -> Any:
    """`chromium_page()` for tests: a missing chromium fails in CI (a silent skip would hide a broken install)."""
    import pytest

    executable = find_chromium()
    if executable is None:
        message = "BROWSER TESTS SKIPPED: Debian's chromium is missing (make test installs it as root)"
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return chromium_page(wav, log, executable)


async def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    """Poll from Python (the console's CSP forbids the eval that Playwright's wait_for_function would need)."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(0.05)


def assert_local_only(log: PageLog) -> None:
    """Every request the page made went to 127.0.0.1, and it logged no error."""
    hosts = {urlsplit(url).hostname for url in log.requests if not url.startswith(("data:", "blob:"))}
    assert hosts == {"127.0.0.1"}, log.requests
    assert log.errors == [], log.errors
