"""The bridge over real WebSockets: loopback Twilio caller <-> media node (uvicorn) <-> loopback Gemini."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from call_state import __version__
from call_state.record import CallStatus, Direction
from tests.standins.gemini_server import GeminiStandIn, tone_pcm24
from tests.standins.media_harness import MediaHarness, media_node, memory_media_node
from tests.standins.twilio_caller import tone_ulaw


def harness(
    kind: str, gemini: GeminiStandIn, tmp_path: Path, **overrides: Any
) -> AbstractAsyncContextManager[MediaHarness]:
    """The same test in memory (no ports) and over real sockets (uvicorn, websockets)."""
    if kind == "memory":
        return memory_media_node(gemini, tmp_path, **overrides)
    return media_node(gemini.url, tmp_path, **overrides)


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_agent_speaks_first_and_setup_is_valid(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=400) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-1", greeting="Say hello to Ana.", voice="Kore")
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        await caller.wait_for(lambda: len(caller.played) >= 400 * 8 - 160)
        assert session.texts[0] == "Say hello to Ana."  # the greeting is the first input
        assert session.api_key == "test-gemini-key-not-real"
        setup = session.setup
        assert setup is not None and setup.model == "models/gemini-3.8-live"
        assert setup.generation_config and setup.generation_config.response_modalities == ["AUDIO"]
        voice = setup.generation_config.speech_config.voice_config.prebuilt_voice_config.voice_name  # type: ignore[union-attr]
        assert voice == "Kore"
        assert setup.input_audio_transcription is not None and setup.output_audio_transcription is not None
        assert setup.session_resumption is not None and setup.session_resumption.handle is None
        assert setup.context_window_compression and setup.context_window_compression.sliding_window is not None
        assert setup.generation_config.thinking_config is None  # not supported on 3.8
        # Twilio got whole 20 ms frames, and the marks were echoed as the audio played.
        media = caller.events("media")
        assert media and all(len(base64.b64decode(m["media"]["payload"])) % 160 == 0 for m in media)
        assert caller.events("mark")
        await caller.stop()
        await caller.wait_closed()
        await asyncio.sleep(0.2)
        await h.node.writer.flush()
        record = h.store.get_call("call-1", time.time())
        assert record is not None and record.stream_sid == caller.stream_sid
        assert record.status is CallStatus.IN_PROGRESS
        assert record.figures.answer_to_first_audio_ms is not None and record.figures.answer_to_first_audio_ms > 0
        assert [t.text for t in record.transcript if t.role == "agent"] == ["Hello, how can I help?"]
        assert gemini.all_errors == []


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_full_turn_caller_audio_reaches_gemini(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=200) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-2")
        caller = await h.caller("call-2").connect()
        session = await gemini.session(0)
        caller.talk(tone_ulaw(600))
        await caller.wait_for(lambda: session.audio_frames >= 30)
        assert session.audio_bytes >= 30 * 640  # 20 ms of 16 kHz PCM16 per Twilio frame
        await session.heard("I need to move my appointment")
        await session.speak(tone_pcm24(500), "Sure, to which day?")
        await caller.wait_for(lambda: len(caller.played) >= (200 + 500) * 8 - 320, timeout=10)
        await caller.stop()
        await caller.wait_closed()
        await h.calls_done()
        record = h.store.get_call("call-2", time.time())
        assert record is not None
        roles = [(t.role, t.text) for t in record.transcript]
        assert ("caller", "I need to move my appointment") in roles
        assert roles[-1] == ("agent", "Sure, to which day?")
        assert record.figures.audio_in_seconds > 0.5 and record.figures.audio_out_seconds >= 0.6
        assert gemini.all_errors == []


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_barge_in_clears_and_no_stale_audio_follows(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-3")
        caller = await h.caller("call-3").connect()
        session = await gemini.session(0)
        long_turn = tone_pcm24(3000)
        await session.send({"serverContent": {"outputTranscription": {"text": "Let me tell you all about our offers"}}})
        await session.speak_chunks([long_turn[i : i + 4801] for i in range(0, len(long_turn), 4801)])
        await caller.wait_for(lambda: len(caller.played) >= 8 * 500)  # half a second heard
        await session.interrupt()
        await caller.wait_for(lambda: bool(caller.clears))
        played_at_clear = len(caller.played)
        await asyncio.sleep(0.3)
        assert caller.media_after_clear == 0
        assert len(caller.played) - played_at_clear <= 160  # nothing of the cut turn after clear
        assert len(caller.played) < 8 * 3000 // 2
        await caller.stop()
        await caller.wait_closed()
        await h.calls_done()
        record = h.store.get_call("call-3", time.time())
        assert record is not None and record.figures.barge_ins == 1
        agent = [t for t in record.transcript if t.role == "agent"]
        assert agent and agent[0].interrupted and agent[0].text.endswith("…")
        assert len(agent[0].text) < len("Let me tell you all about our offers")


@pytest.mark.parametrize("case", ["forged", "cross-call", "expired", "missing", "unknown-call"])
@pytest.mark.parametrize("kind", ["memory"])  # no socket detail involved: in memory only
async def test_bad_tokens_rejected_without_gemini(case: str, kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn() as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-a")
        h.new_call("call-b")
        token = {
            "forged": "9999999999.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "cross-call": h.tokens.mint("call-b", time.time()),
            "expired": h.tokens.mint("call-a", time.time() - 3600),
            "missing": "",
        }.get(case)
        caller = h.caller("call-a" if case != "unknown-call" else "no-such-call", token=token)
        await caller.connect()
        assert await caller.wait_closed() == 1008
        await asyncio.sleep(0.1)
        assert gemini.sessions == []
        assert (
            h.metric(
                f'voice_streams_rejected_total{{reason="{"unknown_call" if case == "unknown-call" else "bad_token"}"}}'
            )
            == 1
        )


async def test_bad_upgrade_signature_rejected(tmp_path: Path) -> None:
    async with (
        GeminiStandIn() as gemini,
        media_node(gemini.url, tmp_path, twilio_auth_token="test-auth-token-not-real") as h,
    ):
        h.new_call("call-s")
        caller = h.caller("call-s")
        caller.signature = "bm90LWEtcmVhbC1zaWduYXR1cmU="
        await caller.connect()
        assert await caller.wait_closed() == 1008
        unsigned = h.caller("call-s")
        await unsigned.connect()
        assert await unsigned.wait_closed() == 1008
        assert gemini.sessions == []
        from twilio.request_validator import RequestValidator

        good = h.caller("call-s")
        good.signature = RequestValidator("test-auth-token-not-real").compute_signature(h.settings.media_stream_url, {})
        await good.connect()
        await gemini.session(0)
        await good.close()


async def test_malformed_frames_do_not_disturb_another_call(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=2000) as gemini, media_node(gemini.url, tmp_path) as h:
        h.new_call("good", n=1)
        h.new_call("bad", n=3)
        good = await h.caller("good", n=1).connect()
        await gemini.session(0)
        bad = await h.caller("bad", n=2).connect(start=False)
        await bad.send({"event": "media", "media": {"payload": "/w=="}})  # media before start
        await bad.send("{not json")
        await bad.send(b"\x00\x01binary")
        await bad.send({"event": "start"})  # start without ids
        assert await bad.wait_closed() == 1008
        worse = await h.caller("bad", n=3).connect()
        await gemini.session(1)
        await worse.send({"event": "media", "streamSid": worse.stream_sid, "media": {"payload": "***not base64"}})
        await worse.send({"event": "nonsense"})
        await worse.send({"event": "mark", "mark": {}})
        await worse.send("x" * (20 * 1024 * 1024))  # 20 MB: closes this stream only
        await worse.wait_closed()
        before = len(good.played)
        await asyncio.sleep(0.5)
        assert len(good.played) > before  # the good call kept playing
        assert (await h.get("/healthz")).json()["active_calls"] == 1
        assert b'voice_frame_errors_total{side="twilio"}' in (await h.get("/metrics")).content
        await good.close()


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_go_away_mid_reply_resumes_without_greeting_again(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-g")
        caller = await h.caller("call-g").connect()
        first = await gemini.session(0)
        await first.resumption_handle("handle-1")
        reply = tone_pcm24(1500)
        await first.speak_chunks([reply[:24000]])
        await first.go_away(30)
        second = await gemini.session(1)
        assert second.setup is not None and second.setup.session_resumption is not None
        assert second.setup.session_resumption.handle == "handle-1"
        await first.speak_chunks([reply[24000:]])  # the old session finishes its reply
        await first.send({"serverContent": {"turnComplete": True}})
        await first.closed.wait()
        caller.talk(tone_ulaw(400))
        await caller.wait_for(lambda: second.audio_frames >= 10)
        await second.speak(tone_pcm24(200), "Still here.")
        await caller.wait_for(lambda: len(caller.played) >= (1500 + 200) * 8 - 480, timeout=10)
        assert first.texts == ["Greet the caller."] and second.texts == []  # never greets twice
        await caller.close()
        await h.calls_done()
        record = h.store.get_call("call-g", time.time())
        assert record is not None and record.figures.gemini_reconnects == 1
        assert gemini.all_errors == []


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_unexpected_close_reconnects_with_handle(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-r")
        caller = await h.caller("call-r").connect()
        first = await gemini.session(0)
        await first.resumption_handle("handle-9")
        await first.ws.close(1011, "Internal error occurred.")
        second = await gemini.session(1)
        assert second.setup and second.setup.session_resumption and second.setup.session_resumption.handle == "handle-9"
        await caller.wait_for(lambda: second.audio_frames >= 5)
        assert second.texts == []
        await caller.close()


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_gemini_refusal_fails_the_call_and_hangs_up(kind: str, tmp_path: Path) -> None:
    refuse = (1008, "models/gemini-3.8-live is not found for API version v1beta")
    async with GeminiStandIn(refuse=refuse) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-f")
        caller = await h.caller("call-f").connect()
        await caller.wait_closed()
        await h.calls_done()
        record = h.store.get_call("call-f", time.time())
        assert record is not None and record.status is CallStatus.FAILED
        assert "not found" in record.error and "1008" in record.error
        assert h.rest.hangups == [f"/2010-04-01/Accounts/AC{'0' * 32}/Calls/{caller.call_sid}.json"]


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_end_call_tool_says_goodbye_then_hangs_up(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-e")
        caller = await h.caller("call-e").connect()
        session = await gemini.session(0)
        await session.speak(tone_pcm24(400), "Goodbye!")
        await session.tool_call("end_call", "fc_9", {"reason": "done"})
        await caller.wait_closed()
        assert session.tool_responses[0]["functionResponses"][0]["id"] == "fc_9"
        assert len(caller.played) >= 400 * 8 - 320  # the goodbye was heard before the hang-up
        assert len(h.rest.hangups) == 1


@pytest.mark.parametrize("kind", ["memory", "sockets"])
async def test_dtmf_reaches_the_model_as_text(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, harness(kind, gemini, tmp_path) as h:
        h.new_call("call-d")
        caller = await h.caller("call-d").connect()
        session = await gemini.session(0)
        await caller.send(
            {"event": "dtmf", "streamSid": caller.stream_sid, "dtmf": {"track": "inbound_track", "digit": "7"}}
        )
        await caller.wait_for(lambda: any("7" in t for t in session.texts[1:]))
        await caller.close()


@pytest.mark.parametrize("kind", ["memory"])  # no socket detail involved: in memory only
async def test_time_limit_ends_politely(kind: str, tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, harness(kind, gemini, tmp_path, max_call_seconds=10) as h:
        h.new_call("call-t")
        caller = await h.caller("call-t").connect()
        session = await gemini.session(0)
        assert await caller.wait_closed(timeout=25) == 1000
        assert any("time limit" in t for t in session.texts)
        assert len(h.rest.hangups) == 1


async def test_drain_finishes_live_calls_and_refuses_only_calls_created_after_it(tmp_path: Path) -> None:
    async with GeminiStandIn() as gemini, media_node(gemini.url, tmp_path) as h:
        h.new_call("call-1", n=1)
        h.new_call("call-2", n=2)  # dialled before the drain, answered during it: still bridged
        caller = await h.caller("call-1", n=1).connect()
        await gemini.session(0)
        await asyncio.sleep(0.01)
        h.node.start_drain()
        h.new_call("call-3", n=3)  # created after the drain began: it belongs to another node
        health = await h.get("/healthz")
        assert health.status_code == 503 and health.json() == {
            "status": "draining", "active_calls": 1, "capacity": h.settings.max_concurrent_calls,
            "version": __version__,
        }  # fmt: skip
        late = await h.caller("call-3", n=3).connect()
        assert await late.wait_closed() == 1013
        answered = await h.caller("call-2", n=2).connect()
        await gemini.session(1)
        waiter = asyncio.create_task(h.node.wait_idle(10))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # the live calls are not cut
        await caller.stop()
        await answered.stop()
        assert await asyncio.wait_for(waiter, 5) is True
        assert len(gemini.sessions) == 2


async def test_twenty_concurrent_calls(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=300) as gemini, media_node(gemini.url, tmp_path) as h:
        callers = []
        for i in range(20):
            h.new_call(f"call-{i}", n=i)
            callers.append(await h.caller(f"call-{i}", n=i).connect())
        for c in callers:
            await c.wait_for(lambda c=c: len(c.played) >= 300 * 8 - 160, timeout=15)
        assert len(gemini.sessions) == 20 and gemini.all_errors == []
        assert (await h.get("/healthz")).json()["active_calls"] == 20
        for c in callers:
            await c.stop()
        await asyncio.sleep(0.5)
        assert (await h.get("/healthz")).json()["active_calls"] == 0


async def test_browser_call_needs_the_console_origin_and_its_own_route(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=300) as gemini, media_node(gemini.url, tmp_path) as h:
        console = f"http://127.0.0.1:{h.settings.port}"
        h.new_call("web-1", Direction.BROWSER)
        h.new_call("phone-1")
        with pytest.raises(InvalidStatus) as refused:  # cross-site WebSocket hijacking: 403 at the upgrade
            await h.caller("web-1", browser_origin="https://evil.example").connect()
        assert refused.value.response.status_code == 403
        wrong_route = await h.caller("web-1", n=1).connect()  # a browser call's token on Twilio's route
        assert await wrong_route.wait_closed() == 1008
        phone_on_browser = await h.caller("phone-1", n=2, browser_origin=console).connect()
        assert await phone_on_browser.wait_closed() == 1008
        assert gemini.sessions == []
        h.new_call("web-2", Direction.BROWSER)
        page = await h.caller("web-2", n=3, browser_origin=console).connect()
        await gemini.session(0)
        await page.wait_for(lambda: len(page.played) >= 300 * 8 - 160)
        await page.stop()
        await page.wait_closed()
        await h.calls_done()
        record = h.store.get_call("web-2", time.time())
        assert record is not None and record.status is CallStatus.COMPLETED  # no Twilio callback will say so


async def test_an_ordinary_hang_up_is_completed_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with GeminiStandIn(reply_ms=200) as gemini, media_node(gemini.url, tmp_path) as h:
        for i, stop_first in enumerate((True, False, True)):
            h.new_call(f"call-{i}", n=i)
            caller = await h.caller(f"call-{i}", n=i).connect()
            await gemini.session(i)
            await caller.wait_for(lambda caller=caller: bool(caller.played))
            if stop_first:
                await caller.stop()
            await caller.close()  # Twilio closes right after `stop` (or without one)
        await h.calls_done()
        assert h.metric('voice_calls_total{outcome="completed"}') == 3
        assert h.metric('voice_calls_total{outcome="error"}') == 0
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    ended = [r.getMessage() for r in caplog.records if "ended (completed" in r.getMessage()]
    assert len(ended) == 3  # one INFO line per call
