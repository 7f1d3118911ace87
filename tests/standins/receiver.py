"""A loopback stand-in for a user's server that receives our tool calls and webhooks, over real HTTP(S).

A threading HTTP/1.1 server on 127.0.0.1 (keep-alive, optional TLS with a test CA). It checks the
X-Voice-Agent-Signature with the secret like a careful user would (401 when it does not verify), records every
request before answering (headers, raw body, parsed JSON, arrival time, signature verdict, TLS SNI, which
connection carried it) and answers each path as configured: status, JSON or raw body, a delay, a redirect, or
a huge / slow / endless streamed body.

    with Receiver(SECRET) as receiver:
        receiver.reply("/book", json={"booked": True})
        receiver.reply("/slow", delay_s=5)
        client = OutboundClient(WebhookSigner(SECRET), OutboundPolicy(frozenset({"127.0.0.1"})))
        result = await client.post_json(receiver.url("/book"), {"day": "monday"})
        assert receiver.deliveries("/book") == 1 and receiver.received[0].signature_ok

`FakeResolver` answers DNS for made-up names (and can change its answer, as a rebinding attacker would);
`make_tls(names)` builds a throwaway CA and a certificate for `names`: `Receiver(SECRET, tls=tls.server())`, and
`OutboundClient(..., ssl_context=tls.client)` trusts it.
"""

from __future__ import annotations

import datetime
import ipaddress
import itertools
import json
import socket
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from call_state.outbound_signature import SIGNATURE_HEADER, SignatureError, WebhookSigner

MAX_REQUEST_BYTES = 8 << 20


@dataclass
class Reply:
    status: int = 200
    json: Any = field(default_factory=lambda: {"ok": True})
    body: bytes | None = None  # a raw body instead of `json`
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # wait this long before answering (the request is recorded first)
    redirect_to: str | None = None  # answer 302 Location: <this> (or `status` if it is a 3xx)
    stream_bytes: int = 0  # instead of a body: this many bytes (spaces, then {}), chunked, no Content-Length
    chunk_bytes: int = 65536
    chunk_delay_s: float = 0.0  # pause between chunks: a slow (drip-fed) body


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    json: Any  # None if the body is not JSON
    at: float  # time.time() on arrival
    signature_ok: bool
    signature_error: str
    sni: str | None  # TLS server name the client sent (None over plain HTTP)
    connection: int  # which TCP connection carried it (1, 2, ...): shows keep-alive reuse


@dataclass(frozen=True)
class ThrowawayTls:
    chain_pem: bytes  # the server certificate, then the CA's
    key_pem: bytes
    client: ssl.SSLContext  # trusts only the throwaway CA

    def server(self) -> ssl.SSLContext:
        """A fresh server context (each Receiver sets its own SNI callback on it)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as scratch:
            chain, key = Path(scratch) / "chain.pem", Path(scratch) / "key.pem"
            chain.write_bytes(self.chain_pem)
            key.write_bytes(self.key_pem)
            context.load_cert_chain(chain, key)
        return context


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default 5 drops connections when a test sends 40 at once
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer, failed TLS handshakes: what these tests provoke on purpose


class Receiver:
    def __init__(
        self, secret: bytes | None, tls: ssl.SSLContext | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.signer = WebhookSigner(secret) if secret is not None else None
        self._clock = clock  # what "now" is when checking the signature's age
        self.received: list[Received] = []
        self.replies: dict[str, Reply] = {}
        self.default = Reply()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._connections = itertools.count(1)
        self._sni: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        if tls is not None:
            tls.sni_callback = self._remember_sni
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.scheme = "https" if tls is not None else "http"
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def reply(self, path: str, **fields: Any) -> Reply:
        self.replies[path] = Reply(**fields)
        return self.replies[path]

    def deliveries(self, path: str | None = None) -> int:
        with self._changed:
            return sum(1 for r in self.received if path is None or r.path.split("?")[0] == path)

    def wait_for(self, count: int, path: str | None = None, timeout_s: float = 10.0) -> list[Received]:
        """Block until `count` requests (to `path`) have arrived; AssertionError after `timeout_s`."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.deliveries(path) >= count, timeout_s):
                raise AssertionError(f"{self.deliveries(path)} of {count} requests to {path or 'any path'} arrived")
            return [r for r in self.received if path is None or r.path.split("?")[0] == path]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()  # wakes delayed and dripping handlers
        self._server.shutdown()
        self._server.server_close()

    def _remember_sni(self, sock: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        if server_name is not None:
            self._sni[sock] = server_name

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes, connection: int) -> Received:
        headers = {name.lower(): value for name, value in handler.headers.items()}
        verdict, problem = False, "no secret configured"
        if self.signer is not None:
            try:
                self.signer.verify(headers.get(SIGNATURE_HEADER.lower(), ""), body, self._clock())
                verdict, problem = True, ""
            except SignatureError as exc:
                problem = str(exc)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        record = Received(
            handler.command, handler.path, headers, body, parsed, time.time(), verdict, problem,
            self._sni.get(handler.connection), connection,
        )  # fmt: skip
        with self._changed:
            self.received.append(record)
            self._changed.notify_all()
        return record

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                self.connection_number = next(receiver._connections)
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.settimeout(5)
                    self.request.do_handshake()  # in this connection's thread, not the accept loop
                    self.request.settimeout(None)
                super().setup()

            def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, reply: Reply) -> None:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                total, sent = reply.stream_bytes, 0
                try:
                    while sent < total and not receiver._closing.is_set():
                        size = min(total - sent, reply.chunk_bytes)
                        self.wfile.write(b"%x\r\n" % size + _stream_slice(total, sent, size) + b"\r\n")
                        sent += size
                        if reply.chunk_delay_s and receiver._closing.wait(reply.chunk_delay_s):
                            break
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass  # the client hung up on a body it did not want: that is the point
                self.close_connection = True

            def do_POST(self) -> None:
                length = self.headers.get("Content-Length", "")
                if not length.isascii() or not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
                    self._send(411, b'{"error":"length required"}', {"Content-Type": "application/json"})
                    self.close_connection = True
                    return
                record = receiver._record(self, self.rfile.read(int(length)), self.connection_number)
                reply = receiver.replies.get(self.path.split("?")[0], receiver.default)
                if reply.delay_s and receiver._closing.wait(reply.delay_s):
                    return
                if receiver.signer is not None and not record.signature_ok:
                    self._send(401, b'{"error":"bad signature"}', {"Content-Type": "application/json"})
                elif reply.redirect_to is not None:
                    status = reply.status if 300 <= reply.status < 400 else 302
                    self._send(status, b"", {"Location": reply.redirect_to, **reply.headers})
                elif reply.stream_bytes:
                    self._stream(reply)
                else:
                    body = reply.body if reply.body is not None else json.dumps(reply.json).encode()
                    self._send(reply.status, body, {"Content-Type": "application/json", **reply.headers})

        return Handler


def _stream_slice(total: int, start: int, size: int) -> bytes:
    """Bytes [start, start + size) of a streamed body: spaces, then "{}" (whole, it is valid JSON, just large)."""
    tail = max(0, total - 2)
    spaces = max(0, min(start + size, tail) - start)
    return b" " * spaces + b"{}"[max(0, start - tail) : max(0, start + size - tail)]


class FakeResolver:
    """DNS for made-up names: `{"crm.test": ["127.0.0.1"]}`; `change()` rebinds a name; `calls` lists lookups."""

    def __init__(self, answers: Mapping[str, Sequence[str]]) -> None:
        self.answers = {host: list(addresses) for host, addresses in answers.items()}
        self.calls: list[str] = []

    def change(self, host: str, addresses: Sequence[str]) -> None:
        self.answers[host] = list(addresses)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.answers[host])


def make_tls(names: Sequence[str]) -> ThrowawayTls:
    """A throwaway CA and a server certificate valid for `names` (DNS names or IP addresses)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject: str, key: Any, issuer: str, signer: Any, ca: bool, sans: list[x509.GeneralName]) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(signer, hashes.SHA256())

    def general_name(name: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            return x509.DNSName(name)

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("test CA (not real)", ca_key, "test CA (not real)", ca_key, True, [])
    leaf = certificate(names[0], leaf_key, "test CA (not real)", ca_key, False, [general_name(n) for n in names])
    pem = serialization.Encoding.PEM
    key = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    client = ssl.create_default_context(cadata=ca.public_bytes(pem).decode())
    return ThrowawayTls(leaf.public_bytes(pem) + ca.public_bytes(pem), key, client)
