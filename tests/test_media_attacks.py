"""Each attack tried on the media node, refused or harmless. Most run in memory (no ports): the node is the real
one, the callers and Gemini reach it through in-memory sockets (tests/standins/memory_socket.py)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from pathlib import Path

import pytest

from call_state.record import CallStatus, Direction
from media_node.admission import MAX_FRAMES_BEFORE_START, START_TIMEOUT_S
from media_node.call_context import LOGGED_FRAME_ERRORS
from tests.standins.flaky_store import FlakySqliteStore
from tests.standins.gemini_server import GeminiStandIn, tone_pcm24
from tests.standins.media_harness import memory_media_node
from tests.standins.twilio_caller import TwilioCaller, tone_ulaw


def sid(prefix: str, n: int) -> str:
    return f"{prefix}{n:032d}"


# --- a stream token is spent once --------------------------------------------------------------------------
async def test_replaying_a_finished_calls_start_is_refused(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        token = h.tokens.mint("call-1", time.time())
        first = await h.caller("call-1", token=token).connect()
        await gemini.session(0)
        await first.stop()
        await first.wait_closed()
        await h.calls_done()
        replay = await h.caller("call-1", token=token).connect()  # the very same start again
        assert await replay.wait_closed() == 1008
        other = h.caller("call-1", token=token)
        other.stream_sid = "MZ" + "f" * 32  # same token, another stream
        await other.connect()
        assert await other.wait_closed() == 1008
        assert len(gemini.sessions) == 1
        assert h.metric('voice_streams_rejected_total{reason="replayed"}') == 2


async def test_a_second_stream_with_the_token_of_a_live_call_is_refused(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        token = h.tokens.mint("call-1", time.time())
        live = await h.caller("call-1", token=token).connect()
        await gemini.session(0)
        hijack = h.caller("call-1", token=token)
        hijack.stream_sid = "MZ" + "e" * 32
        await hijack.connect()
        assert await hijack.wait_closed() == 1008
        assert len(gemini.sessions) == 1 and h.node.active_calls == 1
        await live.stop()
        record = h.store.get_call("call-1", time.time())
        assert record is not None and record.stream_sid == live.stream_sid and record.media_node == "memory-node"


async def test_concurrent_starts_with_one_token_bridge_exactly_one(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        token = h.tokens.mint("call-1", time.time())
        callers = []
        for i in range(8):
            caller = h.caller("call-1", token=token)
            caller.stream_sid = sid("MZ", 100 + i)
            callers.append(caller)
        await asyncio.gather(*(c.connect() for c in callers))
        await gemini.session(0)
        await asyncio.sleep(0.3)
        closed = [c for c in callers if c.ws.close_code is not None]
        assert len(closed) == 7 and all(c.ws.close_code == 1008 for c in closed)
        assert len(gemini.sessions) == 1 and h.node.active_calls == 1
        for caller in callers:
            await caller.close()


# --- the stream's callSid is never trusted ------------------------------------------------------------------
async def test_a_stream_naming_another_calls_sid_is_refused_and_hangs_up_nothing(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-x", n=1)
        h.new_call("call-y", n=2)
        forged = await h.caller("call-y", n=1).connect()  # call Y's valid token, call X's SID
        assert await forged.wait_closed() == 1008
        record = h.store.get_call("call-y", time.time())
        assert record is not None and record.call_sid == sid("CA", 2) and record.stream_sid == ""
        assert gemini.sessions == [] and h.rest.requests == []
        assert h.metric('voice_streams_rejected_total{reason="call_sid_mismatch"}') == 1


async def test_hang_up_uses_the_records_sid_never_the_streams(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-z", call_sid="")  # the dial's answer (with its SID) is not written yet
        caller = await h.caller("call-z", n=7).connect()  # the stream names some SID: admitted, not believed
        session = await gemini.session(0)
        record = h.store.get_call("call-z", time.time())
        assert record is not None and record.call_sid == ""  # never copied from the stream
        h.store.update_call("call-z", time.time(), call_sid=sid("CA", 9))  # the control plane writes it
        await session.tool_call("end_call", "fc_1", {"reason": "done"})
        await caller.wait_closed()
        assert h.rest.hangups == [f"/2010-04-01/Accounts/AC{'0' * 32}/Calls/{sid('CA', 9)}.json"]


# --- unauthenticated sockets are cheap ----------------------------------------------------------------------
async def test_sockets_that_never_start_take_no_call_slot(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path, max_concurrent_calls=3) as h:
        idle = [h.caller("nobody", n=100 + i) for i in range(3 + 50)]
        for caller in idle:
            await caller.connect(start=False)  # `connected` only, then silence
        assert h.node.admission.pending == 53
        h.new_call("real", n=1)
        real = await h.caller("real", n=1).connect()
        await gemini.session(0)
        await real.wait_for(lambda: len(real.played) >= 100 * 8 - 160)  # a real call is bridged
        await asyncio.sleep(START_TIMEOUT_S + 0.5)
        assert all(c.ws.close_code == 1008 for c in idle)  # each had START_TIMEOUT_S to show its start
        assert h.node.admission.pending == 0 and h.metric("voice_pending_streams") == 0
        assert h.metric('voice_streams_rejected_total{reason="no_start"}') == 53
        await real.stop()


async def test_call_slots_are_counted_after_the_claim(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path, max_concurrent_calls=2) as h:
        callers = []
        for i in range(3):
            h.new_call(f"call-{i}", n=i)
            callers.append(await h.caller(f"call-{i}", n=i).connect())
        assert await callers[2].wait_closed() == 1013  # full: refused, and its token is not spent
        assert h.node.health()[0] == 503 and h.node.health()[1]["status"] == "full"
        await callers[0].stop()
        await asyncio.sleep(0.2)
        again = await h.caller("call-2", n=2).connect()
        await gemini.session(2)
        for caller in (callers[1], again):
            await caller.stop()


# --- hostile frames and values ------------------------------------------------------------------------------
async def test_junk_frames_cannot_flood_the_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        before = await h.caller("junk", n=1).connect(start=False)
        for i in range(2000):
            await before.send(f"{{junk {i}")
        assert await before.wait_closed() == 1008  # refused after MAX_FRAMES_BEFORE_START frames
        h.new_call("call-1", n=2)
        caller = await h.caller("call-1", n=2).connect()
        await gemini.session(0)
        for i in range(5000):
            await caller.send({"event": f"nonsense{i % 7}", "streamSid": caller.stream_sid})
        caller.talk(tone_ulaw(200))
        await caller.wait_for(lambda: gemini.sessions[0].audio_frames >= 10)  # the call goes on
        await caller.stop()
        await h.calls_done()
    frame_lines = [r for r in caplog.records if "frame ignored" in r.getMessage()]
    assert len(frame_lines) <= 2 * LOGGED_FRAME_ERRORS
    assert sum(len(r.getMessage()) for r in caplog.records) < 20_000  # bounded, whatever the peer sends
    assert h.metric('voice_frame_errors_total{side="twilio"}') >= 5000 + 1
    assert MAX_FRAMES_BEFORE_START < 20


async def test_wire_values_cannot_forge_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        evil_sid = h.caller("call-1")
        evil_sid.call_sid = "CA" + "0" * 32 + "\nINFO forged: all good"
        await evil_sid.connect()
        assert await evil_sid.wait_closed() == 1008
        evil_id = h.caller("call-1\nINFO forged", token="1.x")
        await evil_id.connect()
        assert await evil_id.wait_closed() == 1008
        caller = await h.caller("call-1").connect()
        await gemini.session(0)
        await caller.send({"event": "x\nINFO forged", "streamSid": caller.stream_sid})
        await caller.stop()
        await h.calls_done()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("stream refused" in m for m in messages) == 2 and any("frame ignored" in m for m in messages)
    assert not any("\n" in m for m in messages)  # a value from the wire appears only as a short escaped repr


async def test_a_unicode_digit_timestamp_is_ignored_and_the_call_goes_on(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=100) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        frames = session.audio_frames
        payload = base64.b64encode(b"\xff" * 160).decode()
        for stamp in ("²", "١٢", "1e3", "-5"):
            media = {"track": "inbound", "chunk": "1", "timestamp": stamp, "payload": payload}
            await caller.send({"event": "media", "streamSid": caller.stream_sid, "media": media})
        await caller.wait_for(lambda: session.audio_frames >= frames + 4)
        assert h.node.active_calls == 1
        await caller.stop()


@pytest.mark.parametrize("token", ["².abc", "١٢٣٤٥٦٧٨٩٠.abc", "9" * 40 + ".x", "", "\x00.\x00"])
async def test_malformed_tokens_are_refusals_not_crashes(
    token: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with GeminiStandIn() as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        caller = await h.caller("call-1", token=token).connect()
        assert await caller.wait_closed() == 1008
        assert gemini.sessions == [] and h.metric('voice_calls_total{outcome="refused"}') == 0  # refused, not a call
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- ending without drama, losing nothing -------------------------------------------------------------------
async def test_store_down_for_five_seconds_loses_no_turn(tmp_path: Path) -> None:
    store = FlakySqliteStore(str(tmp_path / "calls.db"))
    async with GeminiStandIn(auto_reply=False) as gemini, memory_media_node(gemini, tmp_path, store=store) as h:
        console = f"http://127.0.0.1:{h.settings.port}"
        h.new_call("web-1", Direction.BROWSER)
        page = await h.caller("web-1", browser_origin=console).connect()
        session = await gemini.session(0)
        store.failing = True  # the disk fills up right after the stream was claimed
        await session.speak(tone_pcm24(300), "Hello, this is Ana.")
        await session.heard("I would like to move my appointment")
        await session.speak(tone_pcm24(300), "Of course, to which day?")
        await page.wait_for(lambda: len(page.played) >= 600 * 8 - 320)
        await asyncio.sleep(5.0)
        assert store.refused_writes > 0
        store.failing = False
        await page.stop()
        await h.calls_done(timeout=20)
        record = h.store.get_call("web-1", time.time())
        assert record is not None and record.status is CallStatus.COMPLETED
        assert CallStatus.IN_PROGRESS in [e.status for e in record.status_history]
        assert [(t.role, t.text, t.partial) for t in record.transcript] == [
            ("agent", "Hello, this is Ana.", False),
            ("caller", "I would like to move my appointment", False),
            ("agent", "Of course, to which day?", False),
        ]
        assert record.figures.audio_out_seconds >= 0.6
        assert h.metric("voice_store_writes_lost_total") == 0


async def test_a_go_away_switch_still_connecting_at_the_end_leaves_no_socket(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        caller = await h.caller("call-1").connect()
        first = await gemini.session(0)
        gemini.setup_delay_s = 30.0  # the next session never finishes its setup before the call ends
        await first.go_away(30)
        await caller.wait_for(lambda: len(gemini.sessions) == 2)
        await caller.stop()
        await h.calls_done()
        assert all(s.ws.close_code is not None for s in gemini.sessions)  # both sockets closed, none left open


async def test_a_late_handle_from_the_old_socket_does_not_steer_the_new_one(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        caller = await h.caller("call-1").connect()
        first = await gemini.session(0)
        await first.resumption_handle("handle-1")
        await first.speak_chunks([tone_pcm24(200)])  # mid-reply: the old session stays until its turn ends
        await first.go_away(30)
        second = await gemini.session(1)
        await second.resumption_handle("handle-new")
        await first.resumption_handle("handle-old-late")  # the old socket keeps talking during the switch
        await first.send({"serverContent": {"turnComplete": True}})
        await second.ws.close(1011, "Internal error occurred.")
        third = await gemini.session(2)
        assert third.setup is not None and third.setup.session_resumption is not None
        assert third.setup.session_resumption.handle == "handle-new"
        await caller.stop()


async def test_echoes_after_clear_and_marks_for_unknown_names_change_nothing(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, memory_media_node(gemini, tmp_path) as h:
        h.new_call("call-1")
        caller: TwilioCaller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        for name in ("t9-999", "", "x" * 500):
            await caller.send({"event": "mark", "streamSid": caller.stream_sid, "mark": {"name": name}})
        await session.speak(tone_pcm24(200), "Hi.")
        await caller.wait_for(lambda: len(caller.played) >= 200 * 8 - 160)
        assert h.node.active_calls == 1
        await caller.stop()
