"""The one client for every request we make to a user's server: tool calls and end-of-call webhooks.

    client = OutboundClient(WebhookSigner(secret), OutboundPolicy(allowed_hosts))
    reason = await client.check(url)                      # when a URL is accepted (/make-call: 422 reason)
    result = await client.post_json(url, payload, timeout_s=8)
    result.ok, result.data        # a 2xx with a JSON body (204: data None)
    result.delivered              # any 2xx: what a webhook needs (read_json=False skips the body)
    result.failure, result.detail # Failure.TIMEOUT, "no answer within 8 s"; never raises for the network

Each request: JSON body signed with X-Voice-Agent-Signature (call_state.outbound_signature); the URL checked
against the policy and resolved once (the resolver is injected; the real one is getaddrinfo in the loop's
executor), every address checked, and the connection made to the checked address with the original name in
the Host header and TLS SNI (so a DNS answer that changes between check and connect cannot redirect us). One
deadline covers resolving, connecting, sending and reading; redirects are never followed; the response body is
read up to `max_response_bytes` (after decompression) and JSON with NaN, Infinity or absurd nesting is refused.
Nothing is retried once a byte of the request may have left: a retry is the caller's decision (outbox, SQS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from call_state import __version__
from call_state.outbound_body import BodyTooLarge, BodyUnreadable, parse_json, read_capped
from call_state.outbound_policy import Destination, DestinationRefused, IPAddress, OutboundPolicy
from call_state.outbound_pool import DestinationPools
from call_state.outbound_signature import SIGNATURE_HEADER, WebhookSigner
from call_state.settings import Settings

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_TIMEOUT_SECONDS = 300.0
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
MAX_ADDRESSES_TRIED = 3  # a host with a dead address still answers on the next one (nothing was sent yet)
_RESERVED_HEADERS = {"host", "content-type", "content-length", "content-encoding", SIGNATURE_HEADER.lower()}


async def system_resolver(host: str, port: int) -> list[str]:
    """getaddrinfo in the event loop's executor (it blocks); the addresses in the resolver's preferred order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


class Failure(StrEnum):
    REFUSED = "refused"  # the destination policy said no (before or after resolving)
    DNS = "dns"  # the host could not be resolved
    CONNECT = "connect"  # no connection (refused, unreachable, TLS failed): nothing was sent
    TIMEOUT = "timeout"  # the deadline passed (resolving, connecting, sending or reading)
    NETWORK = "network"  # the connection broke after the request may have been sent
    STATUS = "status"  # an answer other than 2xx (a redirect included: never followed)
    BAD_JSON = "bad_json"  # a 2xx whose body is not JSON we accept
    TOO_LARGE = "too_large"  # the body is over max_response_bytes
    PAYLOAD = "payload"  # what we were asked to send is not JSON-serialisable


@dataclass(frozen=True)
class OutboundResult:
    failure: Failure | None
    detail: str = ""  # short, safe to log and to hand to Gemini as a tool error
    status: int | None = None
    data: Any = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def delivered(self) -> bool:
        """The receiver answered 2xx (whatever its body): a webhook is done."""
        return self.status is not None and 200 <= self.status < 300


class _Outcome(Exception):
    """Carries a failure out of the request path (internal)."""

    def __init__(self, failure: Failure, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.failure, self.detail, self.status = failure, detail, status


class OutboundClient:
    def __init__(
        self,
        signer: WebhookSigner,
        policy: OutboundPolicy,
        *,
        resolver: Resolver = system_resolver,
        transport: httpx.AsyncBaseTransport | None = None,
        ssl_context: ssl.SSLContext | None = None,
        pools: DestinationPools | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.policy = policy
        self._signer = signer
        self._resolver = resolver
        self._transport = transport  # tests and special cases: every request through this one transport
        self._pools = pools if pools is not None else DestinationPools(ssl_context)
        self._clock = clock
        self._monotonic = monotonic
        self._max_response_bytes = max_response_bytes
        self._user_agent = f"phone-voice-agent/{__version__}"

    async def check(self, url: object, timeout_s: float = 5.0) -> str | None:
        """None if `url` may be used now, else the reason (one short sentence for a 422)."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._addresses(self.policy.destination(url))
        except DestinationRefused as exc:
            return exc.reason
        except _Outcome as exc:
            return exc.detail
        except TimeoutError:
            return f"the host did not resolve within {timeout_s:g} s"
        return None

    async def post_json(
        self,
        url: object,
        payload: object,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_SECONDS,
        read_json: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> OutboundResult:
        """POST `payload` as signed JSON to `url`. Raises only for programming errors (e.g. a reserved header)."""
        if not 0 < timeout_s <= MAX_TIMEOUT_SECONDS:  # also false for NaN
            raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_SECONDS:g}], got {timeout_s!r}")
        extra = dict(headers or {})
        if _RESERVED_HEADERS & {name.lower() for name in extra}:
            raise ValueError(f"headers may not set any of {sorted(_RESERVED_HEADERS)}")
        start = self._monotonic()

        def outcome(
            failure: Failure | None, detail: str = "", status: int | None = None, data: Any = None
        ) -> OutboundResult:
            elapsed = round((self._monotonic() - start) * 1000, 1)
            return OutboundResult(failure, detail, status, data, elapsed)

        try:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            return outcome(Failure.PAYLOAD, f"payload is not JSON-serialisable ({type(exc).__name__})")
        try:
            async with asyncio.timeout(timeout_s):
                destination = self.policy.destination(url)
                addresses = await self._addresses(destination)
                status, data = await self._send(destination, addresses, body, extra, timeout_s, read_json)
        except DestinationRefused as exc:
            return outcome(Failure.REFUSED, exc.reason)
        except _Outcome as exc:
            return outcome(exc.failure, exc.detail, exc.status)
        except TimeoutError:
            return outcome(Failure.TIMEOUT, f"no answer within {timeout_s:g} s")
        return outcome(None, "", status, data)

    async def aclose(self) -> None:
        """Close pooled connections (an injected transport belongs to whoever made it)."""
        await self._pools.aclose()

    async def _addresses(self, destination: Destination) -> list[IPAddress]:
        if destination.literal is not None:
            return [destination.literal]
        try:
            answers = await self._resolver(destination.host, destination.port)
        except (OSError, UnicodeError) as exc:
            raise _Outcome(Failure.DNS, f"{destination.host} could not be resolved ({type(exc).__name__})") from exc
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(answer)
            except ValueError:
                raise DestinationRefused(f"{destination.host} resolves to an unreadable address") from None
            if address not in addresses:
                addresses.append(address)
        self.policy.check_addresses(destination, addresses)
        return addresses

    async def _send(
        self,
        destination: Destination,
        addresses: list[IPAddress],
        body: bytes,
        extra: dict[str, str],
        timeout_s: float,
        read_json: bool,
    ) -> tuple[int, Any]:
        headers = {
            **extra,
            "Host": destination.host_header,
            "User-Agent": self._user_agent,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",
            SIGNATURE_HEADER: self._signer.sign(body, self._clock()),
        }
        tried = addresses[:MAX_ADDRESSES_TRIED]
        # The overall deadline (asyncio.timeout) ends the request; httpx's own timeouts sit just past it, except
        # connecting when there are several addresses: a black-holed one gets its share, then the next is tried.
        connect_s = timeout_s / len(tried) if len(tried) > 1 else timeout_s + 1
        timeouts = httpx.Timeout(timeout_s + 1, connect=connect_s).as_dict()
        extensions: dict[str, Any] = {"timeout": timeouts}
        if destination.scheme == "https" and destination.literal is None:
            extensions["sni_hostname"] = destination.host  # TLS is verified for the name, not the IP
        connect_error: httpx.ConnectError | httpx.ConnectTimeout | None = None
        try:
            for address in tried:
                request = httpx.Request(
                    "POST", destination.pinned_url(address), headers=headers, content=body, extensions=extensions
                )
                async with self._transport_for(destination) as transport:
                    try:
                        response = await transport.handle_async_request(request)
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing sent: try the next address
                        connect_error = exc
                        continue
                    try:
                        return response.status_code, await self._answer(response, read_json)
                    finally:
                        await response.aclose()
        except httpx.TimeoutException:
            raise TimeoutError from None  # the same answer as the overall deadline
        except httpx.TransportError as exc:
            raise _Outcome(Failure.NETWORK, f"connection failed ({type(exc).__name__})") from exc
        raise _Outcome(Failure.CONNECT, _connect_detail(connect_error))

    @asynccontextmanager
    async def _transport_for(self, destination: Destination) -> AsyncIterator[httpx.AsyncBaseTransport]:
        if self._transport is not None:
            yield self._transport
            return
        async with self._pools.lease((destination.scheme, destination.host, destination.port)) as transport:
            yield transport  # held until the body is read: the pool is not closed under a response

    async def _answer(self, response: httpx.Response, read_json: bool) -> Any:
        status = response.status_code
        if 300 <= status < 400:
            raise _Outcome(Failure.STATUS, f"HTTP {status} (redirects are not followed)", status)
        if not 200 <= status < 300:
            raise _Outcome(Failure.STATUS, f"HTTP {status}", status)
        if not read_json or status == 204:
            return None
        limit = self._max_response_bytes
        try:
            return parse_json(await read_capped(response, limit))
        except BodyTooLarge:
            raise _Outcome(Failure.TOO_LARGE, f"response body is over {limit} bytes", status) from None
        except BodyUnreadable as exc:
            raise _Outcome(Failure.BAD_JSON, str(exc), status) from None


def _connect_detail(error: BaseException | None) -> str:
    if isinstance(error, httpx.ConnectTimeout):
        return "could not connect: timed out"
    cause = error
    for _ in range(6):  # httpx -> httpcore -> the OSError / SSLError underneath
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "could not connect: TLS certificate not valid for this host"
        if isinstance(cause, ssl.SSLError):
            return "could not connect: TLS handshake failed"
        if isinstance(cause, ConnectionRefusedError):
            return "could not connect: connection refused"
        if cause is None:
            break
        cause = cause.__cause__ or cause.__context__
    return "could not connect"


def outbound_client(settings: Settings) -> OutboundClient | None:
    """The process's one client for the user's servers (tools, webhooks), or None without WEBHOOK_SECRET."""
    if not settings.webhook_secret:
        return None
    return OutboundClient(
        WebhookSigner(settings.webhook_secret.encode()), OutboundPolicy(settings.webhook_allowed_hosts)
    )
