"""Configuration as data: every environment variable of DESIGN.md parsed and validated in one place.

`Settings.from_env(environ)` collects every problem and raises one `ConfigError` whose message names each
variable ("PORT must be an integer 1-65535; PUBLIC_URL must start with https:// or http://127.0.0.1").
Credentials may be missing (a laptop without a Twilio account still starts): `missing_credentials()` lists
them for the start-up log and the authenticated /make-call 503 (never for the public /healthz). Code receives a
`Settings`; only the entry points read `os.environ`, through `load_environment()` which adds `.env` without
overriding.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from call_state.agent_actions import CallActions, load_tools_file, parse_actions
from call_state.dotenv_file import load_environment as load_environment
from call_state.dotenv_file import read_dotenv as read_dotenv
from call_state.numbers import ascii_int
from call_state.outbound_policy import parse_allowed_hosts

DEFAULT_GEMINI_MODEL = "gemini-3.8-live"
DEFAULT_GEMINI_LIVE_URL = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly, concise phone assistant. Speak naturally in short sentences, one idea at a time. "
    "If the caller wants to end the call, say goodbye and call the end_call tool."
)
DEFAULT_GREETING = "The call has just been answered. Greet the caller briefly and ask how you can help."
DEFAULT_VOICE = "Puck"
DEFAULT_LANGUAGE = "en-US"

CREDENTIALS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_PHONE_NUMBER", "GEMINI_API_KEY", "API_KEY")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PREFIX = re.compile(r"^\+[0-9]{1,15}$")
_LOCAL = re.compile(r"^(http|ws)://(127\.0\.0\.1|localhost)(:[0-9]+)?(/.*)?$")
_NODE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SQS_URL = re.compile(r"^https://sqs\.([a-z0-9-]{1,30})\.amazonaws\.com(\.cn)?/[0-9]{12}/[A-Za-z0-9_-]{1,80}$")
# The media node keeps up to this many sockets waiting for their `start` (beyond its live calls); the server's
# connection cap must sit above it plus MAX_CONCURRENT_CALLS so a WebSocket flood meets the node's own rules first.
MEDIA_PENDING_SOCKETS = 2000
CONNECTION_HEADROOM = 500  # webhooks, /healthz, /metrics and the control API beside the media streams


class ConfigError(ValueError):
    """One or more settings are missing or malformed; the message names each one."""


@dataclass(frozen=True)
class Settings:
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_phone_number: str = ""
    twilio_api_base_url: str = "https://api.twilio.com"
    gemini_api_key: str = ""
    gemini_model: str = DEFAULT_GEMINI_MODEL
    gemini_live_url: str = DEFAULT_GEMINI_LIVE_URL
    public_url: str = "http://127.0.0.1:8080"
    media_stream_url: str = "ws://127.0.0.1:8080/stream"
    api_key: str = ""
    allowed_destinations: tuple[str, ...] = ()
    stream_token_secret: str = ""
    call_store: str = "sqlite:///./data/calls.db"
    dynamodb_endpoint_url: str = ""
    aws_region: str = ""
    agent_system_prompt: str = DEFAULT_SYSTEM_PROMPT
    agent_greeting: str = DEFAULT_GREETING
    agent_voice: str = DEFAULT_VOICE
    agent_language: str = DEFAULT_LANGUAGE
    max_call_seconds: int = 1800
    idle_timeout_seconds: int = 30
    host: str = "127.0.0.1"
    port: int = 8080
    call_ttl_days: int = 30
    max_concurrent_calls: int = 100
    drain_grace_seconds: int = 600
    make_call_rate_per_min: int = 0  # 0: no per-key pacing (Twilio queues calls above the account's CPS)
    http_header_timeout_seconds: int = 10
    http_keepalive_timeout_seconds: int = 5
    max_connections: int = 100 + MEDIA_PENDING_SOCKETS + CONNECTION_HEADROOM
    node_id: str = "local"
    webhook_secret: str = ""  # signs tool calls and webhooks (all-in-one makes one on first start)
    webhook_allowed_hosts: frozenset[str] = frozenset()  # may be http:// and private (e.g. 127.0.0.1 for development)
    default_actions: CallActions = field(default_factory=CallActions)  # inbound calls: AGENT_TOOLS_FILE, ...
    webhook_queue_url: str = ""  # AWS: end-of-call webhooks go through this SQS queue (else the store's outbox)
    webhook_dlq_url: str = ""  # AWS, the webhook consumer: where a webhook goes after 24 h of failed attempts
    console_origins: tuple[str, ...] = ()  # more pages that may open /browser-stream (the console on API Gateway)
    extra: Mapping[str, str] = field(default_factory=dict)

    def missing_credentials(self) -> list[str]:
        """Names of credentials that are not set (the server runs, but cannot place or bridge calls)."""
        values = {
            "TWILIO_ACCOUNT_SID": self.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio_auth_token,
            "TWILIO_PHONE_NUMBER": self.twilio_phone_number,
            "GEMINI_API_KEY": self.gemini_api_key,
            "API_KEY": self.api_key,
        }
        return [name for name in CREDENTIALS if not values[name]]

    def is_destination_allowed(self, number: str) -> bool:
        return any(number.startswith(prefix) for prefix in self.allowed_destinations)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        return _Parser(environ).parse()


class _Parser:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.errors: list[str] = []

    def text(self, name: str, default: str = "") -> str:
        return self.env.get(name, "").strip() or default

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.text(name)
        if not raw:
            return default
        value = ascii_int(raw)
        if value is None or not lo <= value <= hi:
            self.errors.append(f"{name} must be an integer {lo}-{hi}, got {raw!r}")
            return default
        return value

    def url(self, name: str, default: str, schemes: tuple[str, ...], allow_local: bool = False) -> str:
        value = self.text(name, default).rstrip("/")
        if "?" not in value and (value.startswith(schemes) or (allow_local and _LOCAL.match(value))):
            return value
        local = ("http://127.0.0.1" if schemes[0].startswith("http") else "ws://127.0.0.1",)
        allowed = " or ".join(schemes + (local if allow_local else ()))
        self.errors.append(f"{name} must start with {allowed}, got {value!r}")
        return default

    def max_connections(self, max_calls: int) -> int:
        floor = max_calls + MEDIA_PENDING_SOCKETS
        default = floor + CONNECTION_HEADROOM
        value = self.integer("MAX_CONNECTIONS", default, 1, 1_000_000)
        if value <= floor:
            self.errors.append(
                f"MAX_CONNECTIONS must be above MAX_CONCURRENT_CALLS + {MEDIA_PENDING_SOCKETS} pending media "
                f"sockets = {floor}, got {value}"
            )
            return default
        return value

    def node_id(self, port: int) -> str:
        value = self.text("NODE_ID") or f"{socket.gethostname()}:{port}"
        if not _NODE_ID.match(value):
            if self.text("NODE_ID"):
                self.errors.append(f"NODE_ID must be 1-128 of A-Z a-z 0-9 . _ : -, got {value[:40]!r}")
            return f"node:{port}"  # a host name we cannot use as an id
        return value

    def actions(self) -> CallActions:
        """The agent actions of calls that do not bring their own (`/incoming`)."""
        fields = {"AGENT_TRANSFER_TO": "transfer_to", "AGENT_WEBHOOK_URL": "webhook_url"}
        given: dict[str, object] = {field: self.text(name) for name, field in fields.items()}
        tools_file = self.text("AGENT_TOOLS_FILE")
        try:
            given["tools"] = [t.to_dict() for t in load_tools_file(tools_file)] if tools_file else []
        except (OSError, ValueError) as exc:  # unreadable, not JSON, or a tool that does not validate
            self.errors.append(f"AGENT_TOOLS_FILE: {str(exc)[:200]}")
        try:
            return parse_actions(given)
        except ValueError as exc:  # "transfer_to: ..." -> AGENT_TRANSFER_TO: ...
            field = str(exc).split(":", 1)[0]
            name = next((n for n, f in fields.items() if f == field), "AGENT_TOOLS_FILE")
            self.errors.append(f"{name}: {str(exc).split(':', 1)[-1].strip()}")
            return CallActions()

    def sqs_url(self, name: str) -> str:
        value = self.text(name)
        if value and not SQS_URL.match(value):
            self.errors.append(f"{name} must be an SQS queue URL like https://sqs.REGION.amazonaws.com/ACCOUNT/NAME")
            return ""
        return value

    def origins(self, name: str) -> tuple[str, ...]:
        values = tuple(o.strip().rstrip("/") for o in self.text(name).split(",") if o.strip())
        bad = [o for o in values if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", o)]
        if bad:
            self.errors.append(f"{name} entries must be origins like https://abc.execute-api.us-east-1.amazonaws.com, "
                               f"got {bad[0]!r}")  # fmt: skip
            return ()
        return values

    def parse(self) -> Settings:
        port = self.integer("PORT", 8080, 1, 65535)
        max_calls = self.integer("MAX_CONCURRENT_CALLS", 100, 1, 10000)
        public_url = self.url("PUBLIC_URL", f"http://127.0.0.1:{port}", ("https://",), allow_local=True)
        default_stream = re.sub(r"^http", "ws", public_url) + "/stream"
        media_stream_url = self.url("MEDIA_STREAM_URL", default_stream, ("wss://",), allow_local=True)
        sid = self.text("TWILIO_ACCOUNT_SID")
        if sid and not re.fullmatch(r"AC[0-9a-fA-F]{32}", sid):
            self.errors.append("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits")
        phone = self.text("TWILIO_PHONE_NUMBER")
        if phone and not E164.match(phone):
            self.errors.append(f"TWILIO_PHONE_NUMBER must be E.164 like +15551234567, got {phone!r}")
        prefixes = tuple(p.strip() for p in self.text("ALLOWED_DESTINATIONS").split(",") if p.strip())
        for p in prefixes:
            if not _PREFIX.match(p):
                self.errors.append(f"ALLOWED_DESTINATIONS entries must be E.164 prefixes like +1 or +44, got {p!r}")
                break
        store = self.text("CALL_STORE", "sqlite:///./data/calls.db")
        if not (store.startswith("sqlite:///") and len(store) > 10) and not (
            store.startswith("dynamodb://") and re.fullmatch(r"dynamodb://[A-Za-z0-9_.-]{3,255}", store)
        ):
            self.errors.append(f"CALL_STORE must be sqlite:///path or dynamodb://TABLE_NAME, got {store!r}")
        secret = self.text("STREAM_TOKEN_SECRET")
        if secret and len(secret) < 16:
            self.errors.append("STREAM_TOKEN_SECRET must be at least 16 characters")
        api_key = self.text("API_KEY")
        if api_key and len(api_key) < 16:
            self.errors.append("API_KEY must be at least 16 characters")
        webhook_secret = self.text("WEBHOOK_SECRET")
        if webhook_secret and len(webhook_secret) < 16:
            self.errors.append("WEBHOOK_SECRET must be at least 16 characters")
        try:
            allowed_hosts = parse_allowed_hosts(self.text("WEBHOOK_ALLOWED_HOSTS"))
        except ValueError as exc:  # the message names the variable
            self.errors.append(str(exc))
            allowed_hosts = frozenset()
        settings = Settings(
            twilio_account_sid=sid,
            twilio_auth_token=self.text("TWILIO_AUTH_TOKEN"),
            twilio_phone_number=phone,
            twilio_api_base_url=self.url(
                "TWILIO_API_BASE_URL", "https://api.twilio.com", ("https://",), allow_local=True
            ),
            gemini_api_key=self.text("GEMINI_API_KEY"),
            gemini_model=self.text("GEMINI_MODEL", DEFAULT_GEMINI_MODEL).removeprefix("models/"),
            gemini_live_url=self.url("GEMINI_LIVE_URL", DEFAULT_GEMINI_LIVE_URL, ("wss://",), allow_local=True),
            public_url=public_url,
            media_stream_url=media_stream_url,
            api_key=api_key,
            allowed_destinations=prefixes,
            stream_token_secret=secret,
            call_store=store,
            dynamodb_endpoint_url=self.text("DYNAMODB_ENDPOINT_URL"),
            aws_region=self.text("AWS_REGION") or self.text("AWS_DEFAULT_REGION"),
            agent_system_prompt=self.text("AGENT_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT),
            agent_greeting=self.text("AGENT_GREETING", DEFAULT_GREETING),
            agent_voice=self.text("AGENT_VOICE", DEFAULT_VOICE),
            agent_language=self.text("AGENT_LANGUAGE", DEFAULT_LANGUAGE),
            max_call_seconds=self.integer("MAX_CALL_SECONDS", 1800, 10, 14400),
            idle_timeout_seconds=self.integer("IDLE_TIMEOUT_SECONDS", 30, 5, 3600),
            host=self.text("HOST", "127.0.0.1"),
            port=port,
            call_ttl_days=self.integer("CALL_TTL_DAYS", 30, 1, 3650),
            max_concurrent_calls=max_calls,
            drain_grace_seconds=self.integer("DRAIN_GRACE_SECONDS", 600, 0, 14400),
            make_call_rate_per_min=self.integer("MAKE_CALL_RATE_PER_MIN", 0, 0, 100_000),
            http_header_timeout_seconds=self.integer("HTTP_HEADER_TIMEOUT_SECONDS", 10, 1, 10),
            http_keepalive_timeout_seconds=self.integer("HTTP_KEEPALIVE_TIMEOUT_SECONDS", 5, 1, 300),
            max_connections=self.max_connections(max_calls),
            node_id=self.node_id(port),
            webhook_secret=webhook_secret,
            webhook_allowed_hosts=allowed_hosts,
            default_actions=self.actions(),
            webhook_queue_url=self.sqs_url("WEBHOOK_QUEUE_URL"),
            webhook_dlq_url=self.sqs_url("WEBHOOK_DLQ_URL"),
            console_origins=self.origins("CONSOLE_ORIGINS"),
        )
        transfer_to = settings.default_actions.transfer_to
        if transfer_to and not settings.is_destination_allowed(transfer_to):
            self.errors.append("AGENT_TRANSFER_TO must start with a prefix in ALLOWED_DESTINATIONS")
        if self.errors:
            raise ConfigError("; ".join(self.errors))
        return settings


def startup_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """For entry points: environment + .env + Secrets Manager ARNs -> Settings, or exit 2 with one line."""
    import sys

    from call_state.secrets import resolve_secret_arns

    try:
        return Settings.from_env(resolve_secret_arns(load_environment(environ)))
    except ValueError as exc:  # ConfigError, or a secret that could not be read
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
