"""Web console: time from pressing Talk to the first agent audio the page plays, and the page's buffers.

    bench/.venv/bin/python -m bench.console_bench [--quick]

Real headless Chromium (Debian's `chromium`, driven by Playwright) with a fake microphone, the all-in-one app
(control API + console + media node) on 127.0.0.1, the Gemini stand-in answering the greeting at once. So the
figure is our whole path: microphone, AudioWorklet set-up, `POST /browser-calls`, the WebSocket, the node's Gemini
setup and greeting, the page's jitter buffer and its audio output; a real Gemini adds its own time to first audio.
"Played" is measured outside the page's code: an AnalyserNode tapped in front of `AudioContext.destination`,
read every 10 ms (so onsets carry up to ~10-20 ms of measurement granularity).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.standins.console_harness import ACCOUNT_SID, AUTH_TOKEN, PageLog, chromium_page, console_app, find_chromium
from tests.standins.console_harness import sign_in as sign_in_page
from tests.standins.fake_mic import speech_like, write_wav
from tests.standins.gemini_server import GeminiStandIn, tone_pcm24
from tests.standins.twilio_rest import TwilioRestStandIn

AUDIBLE = 0.01


def _onset(levels: list[list[float]], after: float) -> float | None:
    return next((t for t, rms in levels if t > after and rms > AUDIBLE), None)


def _silence(levels: list[list[float]], after: float) -> float | None:
    return next((t for t, rms in levels if t > after and rms < AUDIBLE), None)


async def one_call(page: Any, gemini: GeminiStandIn, index: int) -> dict[str, float | None]:
    await page.click("#talk")
    session = await gemini.session(index, timeout=15)
    async with asyncio.timeout(15):
        while True:
            rec = await page.evaluate("window.__rec")
            onset = _onset(rec["levels"], rec["talk_at"])
            if onset is not None:
                break
            await asyncio.sleep(0.02)
    first_media = next((r["t"] for r in rec["received"] if r["event"] == "media"), None)
    start_sent = next((r["t"] for r in rec["sent"] if r["event"] == "start"), None)
    # Barge-in in the page: a long turn queued, then `interrupted`; how soon does the page fall silent?
    await session.speak_chunks([tone_pcm24(3000)])
    await asyncio.sleep(0.6)
    await session.interrupt()
    await asyncio.sleep(0.5)
    rec = await page.evaluate("window.__rec")
    clear_at = next((r["t"] for r in rec["received"] if r["event"] == "clear"), None)
    silent = _silence(rec["levels"], clear_at) if clear_at is not None else None
    latency = re.search(r"output latency (\d+) ms", await page.text_content("#call-figures") or "")
    await page.click("#hangup")
    await page.wait_for_selector("#call-status[data-state=ended]")
    return {
        "talk_to_audio": onset - rec["talk_at"],
        "talk_to_start": None if start_sent is None else start_sent - rec["talk_at"],
        "talk_to_first_media": None if first_media is None else first_media - rec["talk_at"],
        "clear_to_silence": None if silent is None or clear_at is None else silent - clear_at,
        "output_latency": float(latency.group(1)) if latency else None,
    }


async def measure(calls: int, executable: str) -> list[dict[str, float | None]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp, TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        tmp_path = Path(tmp)
        wav = write_wav(tmp_path / "mic.wav", speech_like(2.0))
        async with GeminiStandIn(reply_ms=400, validate=False) as gemini:
            async with console_app(tmp_path, gemini.url, twilio.base_url) as app:
                for i in range(calls):
                    async with chromium_page(wav, PageLog(), executable) as page:
                        await sign_in_page(page, app.base)
                        await page.wait_for_selector("#talk")
                        results.append(await one_call(page, gemini, i))
                    await app.calls_done()
                    await asyncio.sleep(1.1)  # one browser call per second per key
    return results


def _stat(values: list[float | None]) -> str:
    got = sorted(v for v in values if v is not None)
    if not got:
        return "no samples"
    return f"{statistics.median(got):.0f} / {got[-1]:.0f}"


def run(quick: bool = False) -> list[dict[str, Any]]:
    executable = find_chromium()
    if executable is None:
        return [{"figure": "console: not run (Debian's chromium is missing)", "ours": None, "unit": ""}]
    started = time.monotonic()
    results = asyncio.run(measure(3 if quick else 10, executable))
    print(f"  console: {len(results)} browser calls in {time.monotonic() - started:.1f} s", file=sys.stderr)
    pick = lambda key: [r[key] for r in results]  # noqa: E731
    return [
        {"figure": "console: Talk → first agent audio played in the page (stand-in Gemini)", "unit": "ms p50/max",
         "ours": _stat(pick("talk_to_audio"))},
        {"figure": "console: of which Talk → `start` sent (mic, worklet, POST, WebSocket)", "unit": "ms p50/max",
         "ours": _stat(pick("talk_to_start"))},
        {"figure": "console: of which Talk → first agent media frame received", "unit": "ms p50/max",
         "ours": _stat(pick("talk_to_first_media"))},
        {"figure": "console: jitter buffer before playback starts (fixed)", "unit": "ms", "ours": 60},
        {"figure": "console: AudioContext output latency (base + output, headless)", "unit": "ms p50/max",
         "ours": _stat(pick("output_latency"))},
        {"figure": "console: barge-in, clear received → page silent", "unit": "ms p50/max",
         "ours": _stat(pick("clear_to_silence"))},
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(f"{row['figure']}: {row['ours']} {row['unit']}")
