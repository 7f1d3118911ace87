"""A browser call in real headless Chromium (Playwright, Debian's chromium) against the all-in-one app.

A fake microphone plays a generated WAV; Gemini is the loopback stand-in, Twilio's REST API the loopback
stand-in. Nothing the page fetches may leave 127.0.0.1, and the page may log no error.
"""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from call_state.record import CallStatus, Direction
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
from tests.standins.fake_mic import best_correlation, speech_like, write_wav
from tests.standins.gemini_server import GeminiSessionStandIn, GeminiStandIn, WireClientMessage, tone_pcm24
from tests.standins.twilio_rest import TwilioRestStandIn

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"Authorization": f"Bearer {API_KEY}"}
AUDIBLE = 0.01  # RMS of what the page plays: above this it is sound, below it silence
pytestmark = pytest.mark.slow


class RecordingGemini(GeminiStandIn):
    """The Gemini stand-in, also keeping the caller audio (PCM16 16 kHz) each session received."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audio: dict[int, bytearray] = {}

    async def _on_message(self, session: GeminiSessionStandIn, msg: WireClientMessage, raw: dict[str, Any]) -> None:
        audio = (raw.get("realtimeInput") or {}).get("audio")
        if audio and session.setup is not None:
            self.audio.setdefault(id(session), bytearray()).extend(base64.b64decode(audio["data"]))
        await super()._on_message(session, msg, raw)


async def levels_between(page: Any, start: float, end: float) -> list[float]:
    levels: list[list[float]] = await page.evaluate("window.__rec.levels")
    return [rms for t, rms in levels if start <= t <= end]


async def test_browser_call_end_to_end(tmp_path: Path) -> None:
    reference = speech_like()
    wav = write_wav(tmp_path / "mic.wav", reference)
    log = PageLog()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        async with RecordingGemini(reply_ms=600) as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
            async with httpx.AsyncClient(base_url=app.base) as http:  # a phone call placed through the API
                placed = await http.post("/make-call", headers=AUTH, json={"destination_number": "+15557654321"})
            assert placed.status_code == 201 and twilio.dials == 1
            phone_id = placed.json()["call_id"]
            async with chromium_page(wav, log) as page:
                await sign_in(page, app.base)
                await page.wait_for_selector(f"#calls tr[data-call-id='{phone_id}']")
                assert await page.is_visible("#talk")
                await page.click("summary")
                await page.uncheck("#echo-cancellation")  # headphones: the cleanest signal, for the correlation
                await page.click("#talk")
                session = await gemini.session(0)
                await page.wait_for_selector("#call-status[data-state=live]")
                call_id = urlsplit(page.url).fragment.removeprefix("/calls/")
                record = app.store.get_call(call_id, time.time())
                assert record is not None and record.direction is Direction.BROWSER

                # The agent's greeting reply (600 ms of tone) is played by the page, and its words shown.
                await page.wait_for_selector("#transcript li[data-role=agent]:has-text('Hello, how can I help?')")
                rec = await page.evaluate("window.__rec")
                onset = next((t for t, rms in rec["levels"] if t > rec["talk_at"] and rms > AUDIBLE), None)
                assert onset is not None, "the page never played the agent's audio"
                talk_to_audio_ms = onset - rec["talk_at"]
                assert rec["constraints"][0]["audio"]["echoCancellation"] is False

                # The stand-in hears the WAV: same signal (correlation), as 16 kHz PCM.
                await wait_until(lambda: len(gemini.audio.get(id(session), b"")) >= 3 * 32000, 15)
                correlation, _ = best_correlation(bytes(gemini.audio[id(session)]), reference)
                assert correlation > 0.9, correlation

                # Barge-in: a long turn is queued in the page, Gemini says `interrupted`, the page goes quiet at
                # once, drops what it held and echoes every pending mark.
                await session.heard("Tell me a long story")
                story = "Once upon a time, in a small village by the sea, there lived an old fisherman and his dog."
                await session.send({"serverContent": {"outputTranscription": {"text": story}}})
                long_turn = tone_pcm24(5000)  # in 100 ms chunks, as Gemini streams it: a mark after each
                await session.speak_chunks([long_turn[i : i + 4800] for i in range(0, len(long_turn), 4800)])
                await wait_until(lambda: _audible_now(page), 5)
                await asyncio.sleep(0.5)
                marks_before = {r["name"] for r in await page.evaluate("window.__rec.received") if r["event"] == "mark"}
                await session.interrupt()
                await wait_until(lambda: page.evaluate("window.__rec.received.some(r => r.event === 'clear')"), 5)
                cleared_at = await page.evaluate("window.__rec.received.find(r => r.event === 'clear').t")
                await asyncio.sleep(2.0)
                after = await levels_between(page, cleared_at + 150, cleared_at + 2000)
                assert after and max(after) < AUDIBLE, max(after)  # 4 s of queued agent audio never played
                sent = await page.evaluate("window.__rec.sent")
                echoed = [s["name"] for s in sent if s["event"] == "mark"]
                assert marks_before <= set(echoed) and len(echoed) == len(set(echoed))
                late = [s for s in sent if s["event"] == "mark" and s["t"] > cleared_at + 100]
                assert late == [], "marks pending at `clear` must be echoed at once"
                await page.wait_for_selector("#transcript li[data-role=caller]:has-text('Tell me a long story')")
                cut = await page.wait_for_selector("#transcript li[data-role=agent][data-interrupted=true] .text")
                heard = await cut.text_content() or ""
                assert story.startswith(heard.rstrip("…")) and 0 < len(heard) < len(story) / 2, heard  # as played

                # Hang up: `stop`, the node ends the call and writes `completed`; the page says so.
                await page.click("#hangup")
                await page.wait_for_selector("#call-status[data-state=ended]")
                await app.calls_done()
                record = app.store.get_call(call_id, time.time())
                assert record is not None and record.status is CallStatus.COMPLETED
                await page.wait_for_selector("#detail-summary .badge[data-status=completed]")
                await page.screenshot(path=str(ROOT / "docs" / "console.png"), full_page=True)
                figures = await page.text_content("#call-figures")
                await page.click("a[href='#/']")
                await page.wait_for_selector(f"#calls tr[data-call-id='{call_id}'][data-direction=browser]")
                assert any(s["event"] == "stop" for s in await page.evaluate("window.__rec.sent"))
                assert gemini.all_errors == []
    assert_local_only(log)
    print(f"\nTalk -> first agent audio played: {talk_to_audio_ms:.0f} ms (page: {figures}); mic correlation "
          f"{correlation:.3f}")  # fmt: skip


async def _audible_now(page: Any) -> bool:
    levels: list[list[float]] = await page.evaluate("window.__rec.levels.slice(-3)")
    return bool(levels) and min(rms for _, rms in levels) > AUDIBLE


async def test_live_transcript_shows_the_agents_words_while_spoken(tmp_path: Path) -> None:
    log = PageLog()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        async with GeminiStandIn(reply_ms=200) as gemini, console_app(tmp_path, gemini.url, twilio.base_url) as app:
            async with chromium_page(write_wav(tmp_path / "mic.wav", speech_like(1.0)), log) as page:
                await sign_in(page, app.base)
                await page.click("#talk")
                session = await gemini.session(0)
                await page.wait_for_selector("#transcript li[data-role=agent]")  # the greeting's reply
                await session.send({"serverContent": {"outputTranscription": {"text": "Let me check the calendar"}}})
                await session.speak_chunks([tone_pcm24(6000)])  # still speaking: no turnComplete yet
                await page.wait_for_selector("#transcript li:has-text('Let me check the calendar')", timeout=2000)
                await page.click("#hangup")
                await page.wait_for_selector("#call-status[data-state=ended]")
                await app.calls_done()
    assert_local_only(log)
