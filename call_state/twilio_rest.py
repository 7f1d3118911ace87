"""A small async client for the Twilio REST calls both planes make: place a call, end it, hand it to a person,
and fetch a call's recording.

Twilio's own library is synchronous (requests) unless aiohttp is added; a few form POSTs do not justify either on
the hot path or in Lambda's cold start, so this is httpx with the base URL and transport injected (tests point it
at a loopback stand-in). Errors keep Twilio's `code` and `message` so the API can pass them on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import httpx

from call_state.numbers import ascii_int

log = logging.getLogger(__name__)

CALL_ALREADY_ENDED = 20404
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
RECORDING_SID = re.compile(r"RE[0-9a-fA-F]{32}")
RECORDING_FORMATS = ("wav", "mp3")


def dial_twiml(number: str, caller_id: str) -> str:
    """`<Response><Dial callerId="…">number</Dial></Response>`, built by Twilio's own library (escaping included)."""
    from twilio.twiml.voice_response import VoiceResponse

    response = VoiceResponse()
    response.dial(number, caller_id=caller_id or None)
    return str(response.to_xml(xml_declaration=False))


class TwilioError(Exception):
    """Twilio refused (its status, code and message), or could not be reached (status 0).

    `maybe_done` is True when the request may have reached Twilio and been acted on although no answer came back
    (a read timeout, a connection dropped mid-answer): a dial must then be treated as possibly placed.
    """

    def __init__(self, status: int, code: int | None, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(f"Twilio answered {status} (code {code}): {message}")
        self.status = status
        self.code = code
        self.message = message
        self.maybe_done = maybe_done


# Failures that happen before the request is written: Twilio cannot have seen it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class TwilioRestClient:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str = "https://api.twilio.com",
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.account_sid = account_sid
        self._auth = httpx.BasicAuth(account_sid, auth_token)
        self._base = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}"
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> httpx.AsyncClient:
        # One pooled client per event loop: Lambda (Mangum) may run each invocation on a new loop.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout, auth=self._auth)
            self._loop = loop
        return self._client

    async def _post(self, path: str, form: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
        pairs: list[tuple[str, str]] = []
        for key, value in form.items():
            if isinstance(value, str):
                pairs.append((key, value))
            else:
                pairs.extend((key, v) for v in value)  # e.g. one StatusCallbackEvent field per event
        try:
            response = await self._http().post(
                f"{self._base}{path}",
                content=urlencode(pairs),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            maybe_done = not isinstance(exc, _NOT_SENT)
            raise TwilioError(0, None, f"Twilio unreachable: {type(exc).__name__}", maybe_done=maybe_done) from exc
        return _answer(response)

    async def create_call(self, form: Mapping[str, str | Sequence[str]]) -> dict[str, Any]:
        """POST Calls.json; returns Twilio's call resource (with `sid` and `status`)."""
        return await self._post("/Calls.json", form)

    async def hangup(self, call_sid: str) -> bool:
        """End a call. False when Twilio says it had already ended (not an error for us)."""
        if not re.fullmatch(r"CA[0-9a-fA-F]{32}", call_sid):
            raise TwilioError(400, None, "not a Twilio call SID")
        try:
            await self._post(f"/Calls/{call_sid}.json", {"Status": "completed"})
        except TwilioError as exc:
            if exc.status == 404 or exc.code == CALL_ALREADY_ENDED:
                log.info("hangup %s: call already ended", call_sid)
                return False
            raise
        return True

    async def transfer(self, call_sid: str, number: str, *, caller_id: str) -> None:
        """Hand a live call to a person: its TwiML becomes `<Dial callerId=…>number</Dial>` (the stream ends)."""
        if not re.fullmatch(r"CA[0-9a-fA-F]{32}", call_sid):
            raise TwilioError(400, None, "not a Twilio call SID")
        if not E164.fullmatch(number) or (caller_id and not E164.fullmatch(caller_id)):
            raise TwilioError(400, None, "transfer numbers must be E.164")
        await self._post(f"/Calls/{call_sid}.json", {"Twiml": dial_twiml(number, caller_id)})

    def recording_url(self, recording_sid: str) -> str:
        """The recording's resource URL in our account (its audio: the same with `.wav` or `.mp3`)."""
        return f"{self._base}/Recordings/{recording_sid}"

    async def open_recording(self, recording_sid: str, fmt: str) -> httpx.Response:
        """The recording's audio as a streaming response (the caller reads and closes it). Redirects are followed
        (httpx drops our credentials on a redirect to another host); a non-2xx answer raises TwilioError."""
        if not RECORDING_SID.fullmatch(recording_sid) or fmt not in RECORDING_FORMATS:
            raise TwilioError(400, None, "not a recording SID and format")
        client = self._http()
        request = client.build_request("GET", f"{self.recording_url(recording_sid)}.{fmt}")
        try:
            response = await client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise TwilioError(0, None, f"Twilio unreachable: {type(exc).__name__}") from exc
        if response.status_code < 300:
            return response
        try:
            await response.aread()  # an error body is small; the client's timeouts bound it
        finally:
            await response.aclose()
        _answer(response)
        raise TwilioError(response.status_code, None, "unexpected answer")  # not reached: _answer raised

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _answer(response: httpx.Response) -> dict[str, Any]:
    """Twilio's JSON answer, or TwilioError with its status, code and message."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    if response.status_code >= 300:
        code = body.get("code")
        raise TwilioError(
            response.status_code,
            ascii_int(code),
            str(body.get("message") or response.reason_phrase or "error"),
        )
    return body
