"""Every parser of wire input returns events and never raises, whatever JSON (or not) arrives."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from call_state.record import AgentSettings
from media_node.gemini_session import GeminiSession
from media_node.twilio_stream import Rejected, Started, TwilioStream

AGENT = AgentSettings("p", "g", "Puck", "en-US")
SID = "MZ" + "a" * 32
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
)
twilio_keys = st.sampled_from(["event", "streamSid", "start", "media", "mark", "dtmf", "stop", "payload", "name",
                               "digit", "callSid", "customParameters", "timestamp", "track", "accountSid"])  # fmt: skip
gemini_keys = st.sampled_from(["setupComplete", "serverContent", "modelTurn", "parts", "inlineData", "data",
                               "inputTranscription", "outputTranscription", "text", "interrupted", "turnComplete",
                               "toolCall", "functionCalls", "id", "name", "args", "toolCallCancellation", "ids",
                               "sessionResumptionUpdate", "newHandle", "resumable", "goAway", "timeLeft",
                               "usageMetadata", "totalTokenCount", "error", "generationComplete"])  # fmt: skip


def shaped(keys: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """JSON whose keys are mostly the protocol's own, so the parser's inner branches are reached."""
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys | st.text(max_size=6), inner, max_size=5),
    )


@settings(max_examples=400)
@given(shaped(twilio_keys) | json_values)
def test_twilio_stream_receive_never_raises(value: object) -> None:
    stream = TwilioStream()
    started = json.dumps({"event": "start", "start": {"streamSid": SID, "callSid": "CA" + "b" * 32}})
    for frame in (json.dumps(value), started, json.dumps(value)):  # before and after `start`
        events = stream.receive(frame)
        assert isinstance(events, list)
        for event in events:
            if isinstance(event, Rejected):
                assert "\\n" not in event.reason and len(event.reason) < 200  # safe to log


@settings(max_examples=400)
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_twilio_stream_takes_any_text_or_bytes(frame: str | bytes) -> None:
    assert isinstance(TwilioStream().receive(frame), list)


@settings(max_examples=400)
@given(shaped(gemini_keys) | json_values)
def test_gemini_session_receive_never_raises(value: object) -> None:
    session = GeminiSession("gemini-3.8-live", AGENT)
    assert isinstance(session.receive(json.dumps(value).encode()), list)
    assert session.resume_handle is None or isinstance(session.resume_handle, str)


def test_a_start_with_malformed_sids_is_fatal() -> None:
    for stream_sid, call_sid in (("MZ1", "CA" + "b" * 32), (SID, "CA\\nforged line"), (SID, "")):
        frame = json.dumps({"event": "start", "start": {"streamSid": stream_sid, "callSid": call_sid}})
        (event,) = TwilioStream().receive(frame)
        assert isinstance(event, Rejected) and event.fatal
    good = json.dumps({"event": "start", "start": {"streamSid": SID, "callSid": "CA" + "b" * 32}})
    assert isinstance(TwilioStream().receive(good)[0], Started)
