"""The agent acts, on the media node: the user's tools (signed, never blocking audio), transfer, voicemail.

The node is the real one in memory; the tool server is the loopback receiver (real HTTP, checks our signature);
Twilio's REST API is the recorder transport; Gemini is the stand-in, which issues the `toolCall`s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from call_state.agent_actions import CallActions, ToolSpec, Voicemail, VoicemailAction
from call_state.record import CallStatus, StatusEvent
from call_state.webhook_delivery import WebhookDelivery
from call_state.webhook_worker import OutboxWorker
from tests.standins.gemini_server import GeminiStandIn, tone_pcm24
from tests.standins.media_harness import MediaHarness, memory_media_node
from tests.standins.receiver import Receiver
from tests.standins.twilio_caller import TwilioCaller, tone_ulaw

SECRET = b"test-webhook-secret-not-real-0123456789"
BOOK = {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]}


@asynccontextmanager
async def node(gemini: GeminiStandIn, tmp_path: Path) -> AsyncIterator[MediaHarness]:
    async with memory_media_node(gemini, tmp_path, webhook_secret=SECRET.decode(),
                                 webhook_allowed_hosts=frozenset({"127.0.0.1"})) as h:  # fmt: skip
        yield h


def book_slot(receiver: Receiver, timeout_s: float = 8.0, path: str = "/book") -> ToolSpec:
    return ToolSpec("book_slot", "Book an appointment slot", BOOK, receiver.url(path), timeout_s)


def tool_responses(session: Any) -> list[dict[str, Any]]:
    return [r for response in session.tool_responses for r in response["functionResponses"]]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


# --- the user's tools -------------------------------------------------------------------------------------------
async def test_a_tool_call_is_signed_and_its_result_reaches_gemini(tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        receiver.reply("/book", json={"booked": True, "slot": "monday 10:00"})
        async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
            h.new_call("call-1", actions=CallActions(tools=(book_slot(receiver),)))
            caller = await h.caller("call-1").connect()
            session = await gemini.session(0)
            declared = {d.name: d for d in session.setup.tools[0].function_declarations}  # type: ignore[union-attr,index]
            assert declared["book_slot"].parameters_json_schema == BOOK
            assert declared["book_slot"].behavior is not None and declared["book_slot"].behavior.value == "NON_BLOCKING"
            assert declared["end_call"].behavior.value == "BLOCKING" and "transfer_call" not in declared  # type: ignore[union-attr]
            await session.tool_call("book_slot", "fc_7", {"day": "monday"})
            await until(lambda: bool(tool_responses(session)))
            (answer,) = tool_responses(session)
            assert answer["id"] == "fc_7" and answer["response"]["result"] == {"booked": True, "slot": "monday 10:00"}
            assert answer["scheduling"] == "WHEN_IDLE"
            (request,) = receiver.received
            assert request.signature_ok and request.json == {
                "call_id": "call-1",
                "tool_call_id": "fc_7",
                "name": "book_slot",
                "arguments": {"day": "monday"},
            }
            await caller.stop()
            await h.calls_done()
            record = h.store.get_call("call-1", time.time())
            assert record is not None and [(c.tool_call_id, c.status) for c in record.tool_calls] == [("fc_7", "ok")]
            assert record.tool_calls[0].ms > 0 and gemini.all_errors == []


async def test_a_slow_tool_times_out_into_an_error_and_audio_keeps_flowing(tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        receiver.reply("/book", json={"booked": True}, delay_s=2.0)
        async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
            h.new_call("call-1", actions=CallActions(tools=(book_slot(receiver, timeout_s=1.0),)))
            caller = await h.caller("call-1").connect()
            session = await gemini.session(0)
            await session.tool_call("book_slot", "fc_1", {"day": "tuesday"})
            frames_before = session.audio_frames
            caller.talk(tone_ulaw(600))
            await session.speak(tone_pcm24(400), "One moment please.")  # the agent goes on talking meanwhile
            await until(lambda: bool(tool_responses(session)))
            assert session.audio_frames - frames_before >= 30  # ~50 caller frames a second kept reaching Gemini
            assert len(caller.played) >= 400 * 8 - 320  # and the agent's audio reached the caller
            (answer,) = tool_responses(session)
            assert answer["response"]["error"] == "no answer within 1 s"
            assert h.node.active_calls == 1  # the call goes on
            await caller.stop()
            await h.calls_done()
            record = h.store.get_call("call-1", time.time())
            assert record is not None and record.tool_calls[0].status == "timeout"


async def test_a_cancelled_tool_call_stops_its_request(tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        receiver.reply("/book", json={"booked": True}, delay_s=3.0)
        async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
            h.new_call("call-1", actions=CallActions(tools=(book_slot(receiver),)))
            caller = await h.caller("call-1").connect()
            session = await gemini.session(0)
            await session.tool_call("book_slot", "fc_3", {"day": "friday"})
            await asyncio.to_thread(receiver.wait_for, 1, "/book")
            await session.send({"toolCallCancellation": {"ids": ["fc_3"]}})
            await caller.stop()
            await h.calls_done()
            assert tool_responses(session) == []  # Gemini cancelled it: it wants no answer
            record = h.store.get_call("call-1", time.time())
            assert record is not None and [(c.tool_call_id, c.status) for c in record.tool_calls] == [
                ("fc_3", "cancelled")
            ]


@pytest.mark.parametrize(
    "url", ["http://10.0.0.7/book", "http://169.254.169.254/latest/meta-data/", "http://example.com/x"]
)
async def test_a_tool_on_a_refused_destination_answers_an_error(url: str, tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
        h.new_call("call-1", actions=CallActions(tools=(ToolSpec("book_slot", "Book", BOOK, url),)))
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        await session.tool_call("book_slot", "fc_1", {"day": "monday"})
        await until(lambda: bool(tool_responses(session)))
        assert "error" in tool_responses(session)[0]["response"]
        await caller.stop()
        await h.calls_done()
        record = h.store.get_call("call-1", time.time())
        assert record is not None and record.tool_calls[0].status == "refused"


# --- transfer to a person ---------------------------------------------------------------------------------------
async def test_transfer_dials_the_person_after_the_sentence(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
        h.settings = h.node.settings
        h.new_call("call-1", actions=CallActions(transfer_to="+15551112222"))
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        assert "transfer_call" in {d.name for d in session.setup.tools[0].function_declarations}  # type: ignore[union-attr,index]
        await session.speak(tone_pcm24(500), "I am transferring you to a colleague.")
        await session.tool_call("transfer_call", "fc_9", {"reason": "wants a human"})
        await until(lambda: bool(h.rest.updates and "Twiml" in h.rest.updates[-1]))
        assert len(caller.played) >= 500 * 8 - 320  # the sentence was heard before the transfer
        twiml = h.rest.updates[-1]["Twiml"][0]
        assert twiml == '<Response><Dial callerId="+15559870000">+15551112222</Dial></Response>' or (
            twiml.startswith("<Response><Dial") and ">+15551112222</Dial></Response>" in twiml
        )
        assert h.rest.requests[-1][0].endswith(f"/Calls/{caller.call_sid}.json")
        await caller.close()  # Twilio ends the stream and bridges the caller to the person
        await h.calls_done()
        record = h.store.get_call("call-1", time.time())
        assert record is not None and record.transferred_to == "+15551112222"
        assert CallStatus.TRANSFERRED in [e.status for e in record.status_history]
        assert h.metric('voice_calls_total{outcome="transferred"}') == 1
        assert [t.text for t in record.transcript] == ["I am transferring you to a colleague."]


async def test_a_refused_transfer_tells_the_agent_and_the_call_goes_on(tmp_path: Path) -> None:
    async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
        h.rest.refuse = (400, 21220, "Call is not in-progress. Cannot redirect.")
        h.new_call("call-1", actions=CallActions(transfer_to="+15551112222"))
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        await session.tool_call("transfer_call", "fc_1", {"reason": "wants a human"})
        await until(lambda: bool(tool_responses(session)))
        assert "Cannot redirect" in tool_responses(session)[0]["response"]["error"]
        await asyncio.sleep(0.3)
        assert h.node.active_calls == 1
        await caller.stop()
        await h.calls_done()
        record = h.store.get_call("call-1", time.time())
        assert record is not None and record.transferred_to == "" and record.tool_calls[0].status == "error"


# --- voicemail --------------------------------------------------------------------------------------------------
async def machine_answers(h: MediaHarness, call_id: str, answered_by: str) -> None:
    """What the control plane's /amd webhook does: write Twilio's AnsweredBy into the record."""
    await asyncio.to_thread(h.store.update_call, call_id, time.time(), answered_by=answered_by)


async def test_voicemail_leave_message_speaks_it_then_hangs_up(tmp_path: Path) -> None:
    message = "Hi, this is ACME clinic about your appointment tomorrow at 10."
    async with GeminiStandIn(auto_reply=False) as gemini, node(gemini, tmp_path) as h:
        h.new_call("call-1", actions=CallActions(voicemail=Voicemail(VoicemailAction.LEAVE_MESSAGE, message)))
        caller: TwilioCaller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        await session.speak_chunks([tone_pcm24(3000)])  # the agent pitches to the machine...
        await caller.wait_for(lambda: len(caller.played) >= 8 * 300)
        await machine_answers(h, "call-1", "machine_end_beep")
        await caller.wait_for(lambda: bool(caller.clears), timeout=2)  # ...and stops at once
        await session.speak_chunks([tone_pcm24(200)])  # the rest of the old reply: never heard
        await session.send({"serverContent": {"turnComplete": True}})  # the old reply ends
        await until(lambda: any(message in t for t in session.texts), timeout=5)
        played = len(caller.played)
        await session.send({"serverContent": {"turnComplete": True}})  # a late end of some earlier turn: no hang-up
        await asyncio.sleep(0.3)
        assert h.rest.hangups == [] and len(caller.played) - played <= 160
        await session.speak(tone_pcm24(600), message)  # the message, as its own turn
        assert await caller.wait_closed(timeout=15) == 1000
        assert len(h.rest.hangups) == 1
        await h.calls_done()
        assert h.metric('voice_calls_total{outcome="hung_up_by_agent"}') == 1


async def test_voicemail_hang_up_ends_the_call_within_two_seconds(tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=200) as gemini, node(gemini, tmp_path) as h:
        h.new_call("call-1", actions=CallActions(voicemail=Voicemail(VoicemailAction.HANG_UP)))
        caller = await h.caller("call-1").connect()
        await gemini.session(0)
        answered = time.monotonic()
        await machine_answers(h, "call-1", "machine_end_silence")
        await caller.wait_closed(timeout=5)
        assert time.monotonic() - answered < 2.0 and len(h.rest.hangups) == 1


@pytest.mark.parametrize("answered_by", ["human", "unknown"])
async def test_a_person_answering_changes_nothing(answered_by: str, tmp_path: Path) -> None:
    async with GeminiStandIn(reply_ms=200) as gemini, node(gemini, tmp_path) as h:
        h.new_call("call-1", actions=CallActions(voicemail=Voicemail(VoicemailAction.HANG_UP)))
        caller = await h.caller("call-1").connect()
        session = await gemini.session(0)
        await machine_answers(h, "call-1", answered_by)
        await asyncio.sleep(1.5)
        assert h.node.active_calls == 1 and h.rest.hangups == [] and not caller.clears
        assert session.texts == ["Greet the caller."]
        await caller.stop()


# --- the end of a bridged call ----------------------------------------------------------------------------------
@pytest.mark.parametrize("twilio_first", [False, True])
async def test_a_bridged_calls_webhook_goes_out_once_both_ends_are_done(twilio_first: bool, tmp_path: Path) -> None:
    with Receiver(SECRET) as receiver:
        async with GeminiStandIn(reply_ms=300) as gemini, node(gemini, tmp_path) as h:
            h.new_call("call-1", actions=CallActions(webhook_url=receiver.url("/events")))
            worker = OutboxWorker(h.node.store, WebhookDelivery(h.node.store, h.node.outbound))
            caller = await h.caller("call-1").connect()
            await gemini.session(0)
            await caller.wait_for(lambda: len(caller.played) >= 300 * 8 - 160)

            async def twilio_says_completed() -> bool:  # what the control plane's /status does
                now = time.time()
                await h.node.store.apply_status("call-1", StatusEvent(CallStatus.COMPLETED, now), now)
                return await h.node.end_of_call.status_done("call-1", now)

            if twilio_first:
                assert not await twilio_says_completed()  # the node has not written its last turn yet
            await caller.stop()
            await h.calls_done()  # the node's last write: its side of the end is done
            if not twilio_first:
                assert await twilio_says_completed()
            assert await worker.run_once() == 1
            (delivery,) = receiver.received
            assert delivery.signature_ok and delivery.json["event"] == "call.ended"
            call = delivery.json["call"]
            assert call["call_id"] == "call-1" and [t["text"] for t in call["transcript"]] == ["Hello, how can I help?"]
            assert call["figures"]["audio_out_seconds"] > 0
            assert await worker.run_once() == 0 and receiver.deliveries() == 1  # once
