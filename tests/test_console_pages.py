"""The console's pages in real headless Chromium: sign-in with a wrong key, the new-call form, the detail page with
the fields the agent-actions work adds (and hostile text), and a foreign origin trying to open a browser stream.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from call_state.record import AgentSettings, CallRecord, CallStatus, Direction
from tests.standins.console_harness import (
    ACCOUNT_SID,
    API_KEY,
    AUTH_TOKEN,
    PageLog,
    assert_local_only,
    console_app,
    sign_in,
    wait_until,
)
from tests.standins.console_harness import browser_page as chromium_page
from tests.standins.fake_mic import speech_like, write_wav
from tests.standins.gemini_server import GeminiStandIn
from tests.standins.twilio_rest import TwilioRestStandIn

AUTH = {"Authorization": f"Bearer {API_KEY}"}
pytestmark = pytest.mark.slow


async def test_wrong_key_shows_an_error_and_no_calls(tmp_path: Path) -> None:
    log = PageLog()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        async with GeminiStandIn() as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
            app.store.create_call(_phone_record("c_existing"))
            async with chromium_page(write_wav(tmp_path / "mic.wav", speech_like(1.0)), log) as page:
                await sign_in(page, app.base, key="wrong-key-not-real-0123456789")
                error = await page.wait_for_selector("#signin-error:not([hidden])")
                assert "Wrong API key" in (await error.text_content() or "")
                assert await page.locator("#calls tr[data-call-id]").count() == 0
                assert not await page.is_visible("#app-view")
                assert await page.evaluate("sessionStorage.length") == 0
                await page.fill("#api-key", API_KEY)  # the right key then works
                await page.click("#sign-in")
                await page.wait_for_selector("#calls tr[data-call-id='c_existing']")
    # Chromium itself reports the refused sign-in request (401) on the console; nothing else may appear.
    log.errors = [e for e in log.errors if "401 (Unauthorized)" not in e]
    assert_local_only(log)


def _phone_record(call_id: str) -> CallRecord:
    now = time.time()
    return CallRecord(call_id, Direction.OUTBOUND, "+15557654321", "+15550001111",
                      AgentSettings("p", "g", "Puck", "en-US"), now, int(now) + 3600)  # fmt: skip


async def test_new_call_form_and_future_record_fields(tmp_path: Path) -> None:
    """The form places a phone call; the detail page renders tool calls, transfer, AMD, recording, unknown fields."""
    log = PageLog()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        async with GeminiStandIn() as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
            async with chromium_page(write_wav(tmp_path / "mic.wav", speech_like(1.0)), log) as page:
                await sign_in(page, app.base)
                await page.wait_for_selector("#calls")
                await page.click("a[href='#/new']")
                await page.fill("#new-call [name=destination_number]", "+15557654321")
                await page.fill("#new-call [name=system_prompt]", "You are Ana from ACME clinic.")
                await page.fill("#new-call [name=voice]", "Kore")
                await page.click("#new-call button[type=submit]")
                await page.wait_for_url("**/console#/calls/*")
                assert twilio.dials == 1 and twilio.created[0]["To"] == ["+15557654321"]
                call_id = urlsplit(page.url).fragment.removeprefix("/calls/")
                record = app.store.get_call(call_id, time.time())
                assert record is not None and record.agent.voice == "Kore"
                await page.click("#end-call")  # a live phone call can be ended from its page
                await wait_until(lambda: len(twilio.updates) == 1, 5)
                assert twilio.updates[0] == (record.call_sid, {"Status": ["completed"]})
                future = {**record.to_dict(), "status": "completed", "transferred_to": "+15550002222",
                          "answered_by": "human", "outcome": "transferred",
                          "tool_calls": [{"name": "book_slot", "arguments": {"day": "Tue"}, "status": "ok", "ms": 41}],
                          "recording": {"sid": "RE" + "1" * 32, "url": "https://api.twilio.example/rec",
                                        "duration_s": 12, "channels": 2},
                          "transcript": [{"index": 0, "role": "agent", "text": "<img src=x onerror=alert(1)>",
                                          "at": record.created_at + 1, "interrupted": True}]}  # fmt: skip

                async def fulfil(route: Any) -> None:
                    if route.request.url.endswith("/recording"):
                        await route.fulfill(status=200, body=_wav_bytes(tmp_path), content_type="audio/wav")
                    else:
                        await route.fulfill(status=200, body=json.dumps(future), content_type="application/json")

                await page.route(f"**/calls/{call_id}**", fulfil)
                await page.reload()
                await page.wait_for_selector("#tool-calls td:has-text('book_slot')")
                assert "+15550002222" in (await page.text_content("#call-outcome") or "")
                assert "transferred" in (await page.text_content("#more-fields") or "")
                turn = page.locator("#transcript li[data-role=agent][data-interrupted=true] .text")
                assert await turn.text_content() == "<img src=x onerror=alert(1)>"  # shown as text, never markup
                assert await page.locator("#transcript img").count() == 0
                await page.click("#load-recording")
                await wait_until(lambda: page.evaluate("document.querySelector('#recording-player').src"), 5)
                assert (await page.get_attribute("#recording-player", "src") or "").startswith("blob:")
    assert_local_only(log)


def _wav_bytes(tmp_path: Path) -> bytes:
    return write_wav(tmp_path / "recording.wav", speech_like(0.5)).read_bytes()


async def test_a_page_on_another_origin_cannot_open_a_browser_stream(tmp_path: Path) -> None:
    """Cross-site WebSocket hijacking from a real browser: its Origin header gets a 403 and no Gemini session."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>another site</title>")

        def log_message(self, *args: Any) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
            async with GeminiStandIn() as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
                async with httpx.AsyncClient(base_url=app.base) as http:  # a real call and token, stolen
                    answer = (await http.post("/browser-calls", json={}, headers=AUTH)).json()
                async with chromium_page(write_wav(tmp_path / "mic.wav", speech_like(1.0)), PageLog()) as page:
                    await page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
                    outcome = await page.evaluate("""([url, callId, token]) => new Promise((resolve) => {
                        const ws = new WebSocket(url);
                        ws.onopen = () => { ws.send(JSON.stringify({event: "start", streamSid: "MZ" + "0".repeat(32),
                          start: {streamSid: "MZ" + "0".repeat(32), callSid: "CA" + "0".repeat(32),
                                  customParameters: {call_id: callId, token}}})); };
                        ws.onclose = (e) => resolve({opened: ws.readyState, code: e.code});
                    })""", [answer["stream_url"], answer["call_id"], answer["token"]])  # fmt: skip
                assert outcome["code"] == 1006  # the upgrade was refused: the page never had an open socket
                await asyncio.sleep(0.3)
                assert gemini.sessions == []
                record = app.store.get_call(answer["call_id"], time.time())
                assert record is not None and record.status is CallStatus.CREATED and record.stream_sid == ""
    finally:
        other.shutdown()
        other.server_close()


async def test_a_watched_turn_shows_what_the_caller_did_not_hear(tmp_path: Path) -> None:
    """Partial turns (rewritten at the same index while spoken), then the cut: the page keeps what it saw."""
    log = PageLog()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        async with GeminiStandIn() as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
            record = _phone_record("c_watched").with_changes(status=CallStatus.IN_PROGRESS)
            app.store.create_call(record)
            base = {**record.to_dict(), "status": "in-progress"}
            spoken = "Once upon a time, there lived a fisherman"
            bodies = [
                {**base, "transcript": [{"index": 0, "role": "agent", "text": spoken[:16], "at": 1, "partial": True}]},
                {**base, "transcript": [{"index": 0, "role": "agent", "text": spoken, "at": 1, "partial": True}]},
                {**base, "status": "completed",
                 "transcript": [{"index": 0, "role": "agent", "text": "Once upon…", "at": 1, "interrupted": True}]},
            ]  # fmt: skip
            served: list[int] = []

            async def next_body(route: Any) -> None:
                body = bodies[min(len(served), len(bodies) - 1)]
                served.append(1)
                await route.fulfill(status=200, body=json.dumps(body), content_type="application/json")

            async with chromium_page(write_wav(tmp_path / "mic.wav", speech_like(1.0)), log) as page:
                await page.route("**/calls/c_watched", next_body)
                await sign_in(page, app.base)
                await page.wait_for_selector("#calls")
                await page.goto(f"{app.base}/console#/calls/c_watched")
                speaking = await page.wait_for_selector("#transcript li[data-partial=true] .who")
                assert "speaking" in (await speaking.text_content() or "")
                unheard = await page.wait_for_selector("#transcript li[data-interrupted=true] .unheard", timeout=5000)
                assert await unheard.text_content() == " a time, there lived a fisherman"
                assert await page.text_content("#transcript li .text") == "Once upon…"
    assert_local_only(log)
