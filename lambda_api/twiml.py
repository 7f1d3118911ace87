"""The TwiML that connects an answered call to the media node."""

from __future__ import annotations

from twilio.twiml.voice_response import Connect, VoiceResponse


def connect_stream(stream_url: str, status_url: str, call_id: str, token: str) -> str:
    """`<Connect><Stream>` (bidirectional); custom parameters carry the call id and its stream token."""
    response = VoiceResponse()
    connect = Connect()
    stream = connect.stream(url=stream_url, status_callback=status_url, status_callback_method="POST")
    stream.parameter(name="call_id", value=call_id)
    stream.parameter(name="token", value=token)
    response.append(connect)
    return str(response)


def hang_up() -> str:
    response = VoiceResponse()
    response.hangup()
    return str(response)


def reject_busy() -> str:
    """For an inbound call the media plane cannot take: the caller hears a busy tone (and is not billed)."""
    response = VoiceResponse()
    response.reject(reason="busy")
    return str(response)
