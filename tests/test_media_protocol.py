"""The sans-I/O protocol core: Twilio Media Streams codec, Gemini Live codec, playback/barge-in, transcripts."""

from __future__ import annotations

import base64
import json

import pytest

from call_state.record import AgentSettings, TranscriptTurn
from media_node.call_ending import Limit, call_limit
from media_node.call_phase import CallLifecycle, CallOutcome, CallPhase, PhaseError
from media_node.conversation import Conversation
from media_node.gemini_session import (
    AgentAudio,
    GeminiSession,
    GenerationComplete,
    GoAway,
    InputTranscript,
    Interrupted,
    Malformed,
    OutputTranscript,
    SetupComplete,
    ToolCall,
    TurnComplete,
    Usage,
)
from media_node.playback import PlaybackTracker, cut_text
from media_node.twilio_stream import CallerAudio, Dtmf, MarkEchoed, Rejected, Started, Stopped, TwilioStream
from tests.standins.gemini_server import validate_client_frame

SID = "MZ" + "a" * 32
AGENT = AgentSettings("You are Ana.", "Greet the caller.", "Kore", "es-US")


def start_frame(**params: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                       "start": {"streamSid": SID, "callSid": "CA" + "b" * 32, "accountSid": "AC" + "c" * 32,
                                 "customParameters": params, "tracks": ["inbound"]}})  # fmt: skip


def media_frame(payload: str) -> str:
    media = {"track": "inbound", "chunk": "3", "timestamp": "40", "payload": payload}
    return json.dumps({"event": "media", "streamSid": SID, "media": media})


# --- Twilio ---------------------------------------------------------------------------------------------------
def test_twilio_happy_path() -> None:
    stream = TwilioStream()
    assert (
        stream.receive(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))[0].protocol == "Call"
    )  # type: ignore[union-attr]
    (started,) = stream.receive(start_frame(call_id="c_1", token="t"))
    assert isinstance(started, Started) and started.custom_parameters == {"call_id": "c_1", "token": "t"}
    (audio,) = stream.receive(media_frame(base64.b64encode(b"\xff" * 160).decode()))
    assert audio == CallerAudio(b"\xff" * 160, 40)
    assert stream.receive(json.dumps({"event": "dtmf", "dtmf": {"digit": "#"}})) == [Dtmf("#")]
    assert stream.receive(json.dumps({"event": "mark", "mark": {"name": "t1-1"}})) == [MarkEchoed("t1-1")]
    assert stream.receive(json.dumps({"event": "stop", "stop": {}})) == [Stopped()]
    assert isinstance(stream.receive(media_frame("/w=="))[0], Rejected)  # after stop


@pytest.mark.parametrize(
    "frame",
    [b"\x00binary", "{bad json", "[1,2]", json.dumps({"event": "bogus"}), "x" * 70000,
     json.dumps({"event": "mark", "mark": {}}), json.dumps({"event": "dtmf", "dtmf": {"digit": "xx"}}),
     media_frame("***"), media_frame(""), json.dumps({"event": "media", "media": "nope"}), "null", "42"],
)  # fmt: skip
def test_twilio_malformed_frames_are_rejected_not_raised(frame: str | bytes) -> None:
    stream = TwilioStream()
    stream.receive(start_frame())
    events = stream.receive(frame)
    assert len(events) == 1 and isinstance(events[0], Rejected) and not events[0].fatal


def test_twilio_out_of_order() -> None:
    stream = TwilioStream()
    assert "before start" in stream.receive(media_frame("/w=="))[0].reason  # type: ignore[union-attr]
    assert "before start" in stream.receive(json.dumps({"event": "mark", "mark": {"name": "x"}}))[0].reason  # type: ignore[union-attr]
    bad_start = stream.receive(json.dumps({"event": "start", "start": {}}))[0]
    assert isinstance(bad_start, Rejected) and bad_start.fatal
    stream.receive(start_frame())
    assert stream.receive(start_frame())[0] == Rejected("second start")


def test_twilio_outbound_frames() -> None:
    stream = TwilioStream()
    stream.receive(start_frame())
    media = json.loads(stream.media(b"\x01" * 320))
    assert media == {"event": "media", "streamSid": SID, "media": {"payload": base64.b64encode(b"\x01" * 320).decode()}}
    assert json.loads(stream.mark("t1-2")) == {"event": "mark", "streamSid": SID, "mark": {"name": "t1-2"}}
    assert json.loads(stream.clear()) == {"event": "clear", "streamSid": SID}


# --- Gemini ---------------------------------------------------------------------------------------------------
def test_gemini_setup_is_valid_and_follows_the_model_rules() -> None:
    session = GeminiSession("gemini-3.8-live", AGENT)
    raw = json.loads(session.setup())
    msg = validate_client_frame(json.dumps(raw))
    assert msg.setup is not None and msg.setup.model == "models/gemini-3.8-live"
    setup = raw["setup"]
    assert setup["generationConfig"]["responseModalities"] == ["AUDIO"]
    assert setup["generationConfig"]["speechConfig"]["languageCode"] == "es-US"
    assert setup["sessionResumption"] == {}  # never "handle": null
    assert "thinkingConfig" not in setup["generationConfig"] and "proactivity" not in setup
    assert setup["contextWindowCompression"]["slidingWindow"]
    assert setup["tools"][0]["functionDeclarations"][0]["name"] == "end_call"


def test_gemini_resumption_handle_and_history() -> None:
    session = GeminiSession("models/gemini-3.8-live", AGENT)
    session.receive(b'{"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": true}}')
    session.receive(b'{"sessionResumptionUpdate": {"resumable": false}}')  # keeps the last good handle
    assert session.resume_handle == "h-1"
    assert json.loads(session.setup(session.resume_handle))["setup"]["sessionResumption"] == {"handle": "h-1"}
    session.receive(b'{"sessionResumptionUpdate": {"newHandle": "\\u00b2", "resumable": "yes"}}')  # not a real update
    assert session.resume_handle == "h-1"
    history = (TranscriptTurn(0, "agent", "Hola, soy Ana.", 1.0), TranscriptTurn(1, "caller", "Quiero una cita.", 2.0))
    fresh = json.loads(session.setup(None, history=history))["setup"]
    assert fresh["sessionResumption"] == {}
    text = fresh["systemInstruction"]["parts"][0]["text"]
    assert "Do not greet again" in text and "caller: Quiero una cita." in text


def test_gemini_client_frames_validate() -> None:
    session = GeminiSession("gemini-3.8-live", AGENT)
    for frame in (session.audio(b"\x00\x01" * 320), session.greeting(), session.text("[key 5]"),
                  session.audio_stream_end(), session.tool_response("fc_1", "end_call", {"result": "ok"})):  # fmt: skip
        validate_client_frame(frame)
    assert json.loads(session.audio(b"ab"))["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000"


def test_gemini_server_messages() -> None:
    session = GeminiSession("gemini-3.8-live", AGENT)
    pcm = b"\x01\x02\x03"
    frame = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000",
             "data": base64.b64encode(pcm).decode()}}, {"text": "thinking"}]}, "outputTranscription": {"text": "Hi"},
             "generationComplete": True, "turnComplete": True}, "usageMetadata": {"totalTokenCount": 9}}  # fmt: skip
    events = session.receive(json.dumps(frame).encode())
    assert events == [AgentAudio(pcm), OutputTranscript("Hi"), GenerationComplete(), TurnComplete(), Usage(9)]
    assert session.receive(b'{"setupComplete": {}}') == [SetupComplete()] and session.setup_complete
    assert session.receive(b'{"serverContent": {"interrupted": true}}') == [Interrupted()]
    assert session.receive(b'{"serverContent": {"inputTranscription": {"text": "hola"}}}') == [InputTranscript("hola")]
    assert session.receive(b'{"goAway": {"timeLeft": "50s"}}') == [GoAway(50.0)]
    calls = session.receive(b'{"toolCall": {"functionCalls": [{"id": "fc_1", "name": "end_call", "args": {}}]}}')
    assert calls == [ToolCall("fc_1", "end_call", {})]
    url_safe = base64.urlsafe_b64encode(b"\xfb\xff").decode().rstrip("=")  # the SDK's flavour, unpadded
    assert session.receive(
        json.dumps({"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": url_safe}}]}}})
    )[0] == AgentAudio(b"\xfb\xff")


@pytest.mark.parametrize(
    "frame", [b"not json", b"[]", b'{"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "!!!"}}]}}}']
)
def test_gemini_malformed(frame: bytes) -> None:
    events = GeminiSession("gemini-3.8-live", AGENT).receive(frame)
    assert len(events) == 1 and isinstance(events[0], Malformed)


def test_gemini_unknown_fields_are_ignored() -> None:
    assert GeminiSession("m", AGENT).receive(b'{"serverContent": {"futureField": 1}, "voiceActivity": {}}') == []


# --- playback, barge-in, transcripts -------------------------------------------------------------------------
def test_playback_counts_only_played_audio() -> None:
    playback = PlaybackTracker()
    first, second, third = playback.sent(1600), playback.sent(1600), playback.sent(1600)
    assert playback.echoed(first) and playback.played_bytes == 1600 and playback.playing
    assert playback.interrupt()  # clear: the rest is discarded
    assert not playback.echoed(third) and not playback.echoed(second)  # late echoes mean "cleared"
    assert playback.heard_fraction() == pytest.approx(1 / 3)
    assert not playback.playing and not playback.echoed("unknown")


def test_cut_text_to_what_was_heard() -> None:
    assert cut_text("Let me tell you about our offers", 1.0) == "Let me tell you about our offers"
    assert cut_text("Let me tell you about our offers", 0.5) == "Let me tell you…"
    assert cut_text("Hello", 0.0) == ""


def test_conversation_turns_and_figures() -> None:
    conv = Conversation(answered_at=100.0)
    conv.agent_audio(8000, now=100.35)
    conv.agent_said("Hello, I am Ana. How can I help you today?", 101.0)
    turns = conv.interrupted(101.5, heard_fraction=0.4)
    assert turns[0].role == "agent" and turns[0].interrupted and turns[0].text.endswith("…")
    conv.caller_said("I want", 102.0)
    conv.caller_said(" an appointment", 102.1)
    turns = conv.agent_said("Sure.", 103.0)
    assert [(t.role, t.text, t.partial) for t in turns] == [("caller", "I want an appointment", False),
                                                            ("agent", "Sure.", True)]  # fmt: skip
    turns = conv.agent_done(103.5)
    assert [(t.index, t.role, t.text, t.interrupted, t.partial) for t in turns] == [(2, "agent", "Sure.", False, False)]
    conv.caller_audio(16000)
    figures = conv.figures()
    assert figures.answer_to_first_audio_ms == pytest.approx(350.0)
    assert (figures.barge_ins, figures.audio_in_seconds, figures.audio_out_seconds) == (1, 2.0, 1.0)


def test_call_limits_in_order_of_precedence() -> None:
    def limit(now: float, last_frame: float = 0.0, last_activity: float = 0.0, playing: bool = False) -> Limit | None:
        return call_limit(now, started_at=0.0, last_frame_at=last_frame, last_activity_at=last_activity,
                          agent_playing=playing, idle_timeout_s=30.0, max_call_s=600.0)  # fmt: skip

    assert limit(10.0) is None
    assert limit(31.0, last_frame=30.0) is Limit.IDLE  # frames flow, but nobody spoke for 31 s
    assert limit(31.0, last_frame=30.0, playing=True) is None  # the agent is still talking: not idle
    assert limit(31.0, last_frame=0.5) is Limit.NO_FRAMES  # Twilio went quiet: the stream is dead
    assert limit(601.0, last_frame=600.0, last_activity=600.0) is Limit.TIME_LIMIT
    assert limit(601.0, last_frame=1.0, last_activity=600.0) is Limit.NO_FRAMES  # a dead stream beats the limit


def test_partial_turns_grow_under_one_index_and_are_throttled() -> None:
    conv = Conversation(answered_at=0.0)
    assert [(t.index, t.text, t.partial) for t in conv.agent_said("Hello", 10.0)] == [(0, "Hello", True)]
    assert conv.agent_said(" there,", 10.2) == []  # less than PARTIAL_EVERY_S after the last one shown
    assert [(t.index, t.text) for t in conv.agent_said(" how are", 10.6)] == [(0, "Hello there, how are")]
    assert [t.text for t in conv.caller_said("I", 10.7)] == ["I"]  # the caller talks over it: its own index
    (whole,) = conv.interrupted(11.0, heard_fraction=0.5)
    assert (whole.index, whole.partial, whole.interrupted, whole.at) == (0, False, True, 10.0)
    assert [(t.index, t.role, t.partial) for t in conv.finish(12.0)] == [(1, "caller", False)]


def test_call_lifecycle_transitions() -> None:
    life = CallLifecycle()
    assert life.phase is CallPhase.AWAITING_START
    life.admitted()
    assert life.live and life.begin_goodbye(CallOutcome.LIMIT, "time limit")
    assert not life.begin_goodbye(CallOutcome.HUNG_UP_BY_AGENT, "again")  # one goodbye
    assert life.end(CallOutcome.COMPLETED, "hung up") and not life.end(CallOutcome.ERROR, "late")
    assert (life.phase, life.outcome, life.reason) == (CallPhase.ENDED, CallOutcome.LIMIT, "time limit")
    with pytest.raises(PhaseError):
        life.admitted()
    refused = CallLifecycle()
    assert refused.end(CallOutcome.REFUSED, "bad token") and refused.outcome is CallOutcome.REFUSED
