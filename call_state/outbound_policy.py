"""Where we may send requests: the destination policy for tool and webhook URLs. No I/O, no clock.

A user gives us URLs (`tools[].url`, `webhook_url`); our servers then POST to them from inside our network. So a
URL must not reach our own infrastructure: `https://` only, and every address the host resolves to must be a
public unicast address. Hosts listed in WEBHOOK_ALLOWED_HOSTS are trusted as written (plain `http://` and any
address allowed): that is how local development points tools at 127.0.0.1.

The URL is parsed once, by httpx (the library that will send it), and then held to a grammar stricter than
httpx's: printable ASCII only (no Unicode look-alikes; write IDNA hosts as `xn--`), no userinfo, no `%` or `\\`
in the host, and a host whose last label is a number must be a canonical dotted-quad IPv4 address (so `0x7f.1`,
`2130706433`, `0177.0.0.1` and `127.0.0.1.` are refused, not resolved). What we check is what we connect to:
`call_state.outbound` resolves once, checks with `address_refusal`, and pins the connection to that address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048
MAX_ALLOWED_HOSTS = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")

_V4_REFUSED = [
    (ipaddress.IPv4Network(net), label)
    for net, label in [
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared address space (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local (cloud metadata lives here)"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved (incl. broadcast)"),
    ]
]
_V6_REFUSED = [
    (ipaddress.IPv6Network(net), label)
    for net, label in [
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/96", "IPv4-compatible (deprecated)"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("100::/64", "discard-only"),
        ("2001::/23", "IETF protocol assignments (incl. Teredo)"),
        ("2001:db8::/32", "documentation"),
        ("2002::/16", "6to4 tunnel"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "segment routing"),
        ("fc00::/7", "unique local (private)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    ]
]
_V6_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class DestinationRefused(ValueError):
    """A URL or an address our policy refuses; `reason` is short, precise and safe to show the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def address_refusal(address: IPAddress) -> str | None:
    """Why `address` is not a public unicast address we may connect to, or None if it is one."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            inner = address_refusal(address.ipv4_mapped)
            return f"IPv4-mapped {inner}" if inner else None
        if address in _NAT64:
            inner = address_refusal(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
            return f"NAT64 of {inner}" if inner else None
        for network, label in _V6_REFUSED:
            if address in network:
                return label
        return None if address in _V6_GLOBAL_UNICAST else "reserved (not global unicast)"
    for v4_network, label in _V4_REFUSED:
        if address in v4_network:
            return label
    return None


def _parse_host(host: str) -> IPAddress | None:
    """Validate an ASCII, lower-case host: returns its address if it is an IP literal, None for a DNS name."""
    if not host:
        raise DestinationRefused("URL has no host")
    if "%" in host:
        raise DestinationRefused("host must not contain '%' (no percent-encoding or IPv6 zone ids)")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise DestinationRefused(f"host {host[:80]!r} is not a valid IPv6 address") from None
    name = host.removesuffix(".")
    labels = name.split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise DestinationRefused(
                f"host {host[:80]!r} is a numeric spelling that is not a canonical IPv4 address like 192.0.2.1"
            ) from None
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise DestinationRefused(f"host {host[:80]!r} is not a valid host name")
    return None


def parse_allowed_hosts(text: str) -> frozenset[str]:
    """WEBHOOK_ALLOWED_HOSTS: comma-separated bare hosts (`127.0.0.1, localhost, ::1`); ValueError if malformed."""
    hosts: set[str] = set()
    for raw in text.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
        try:
            if not _PRINTABLE.fullmatch(bare) or "/" in bare or "@" in bare or "\\" in bare:
                raise DestinationRefused("not a bare host")
            literal = _parse_host(bare)
        except DestinationRefused:
            raise ValueError(
                f"WEBHOOK_ALLOWED_HOSTS entries must be bare host names or IP addresses (no scheme, port or "
                f"path) like 127.0.0.1 or crm.internal, got {raw.strip()[:80]!r}"
            ) from None
        hosts.add(str(literal) if isinstance(literal, ipaddress.IPv6Address) else bare)
    if len(hosts) > MAX_ALLOWED_HOSTS:
        raise ValueError(f"WEBHOOK_ALLOWED_HOSTS lists more than {MAX_ALLOWED_HOSTS} hosts")
    return frozenset(hosts)


@dataclass(frozen=True)
class Destination:
    """A URL that passed the policy's URL checks; its addresses are checked when it is resolved."""

    url: httpx.URL
    scheme: str
    host: str  # ASCII, lower case, IPv6 without brackets
    port: int
    literal: IPAddress | None  # the host is an IP address: nothing to resolve
    listed: bool  # in WEBHOOK_ALLOWED_HOSTS: any address, http allowed

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def for_log(self) -> str:
        """scheme://host[:port]/path: the query (where people put tokens) left out."""
        return f"{self.scheme}://{self.host_header}{self.url.path}"[:200]

    def pinned_url(self, address: IPAddress) -> httpx.URL:
        """The same URL with the host replaced by the checked address (the connection goes exactly there)."""
        return self.url.copy_with(host=str(address))


@dataclass(frozen=True)
class OutboundPolicy:
    allowed_hosts: frozenset[str] = frozenset()

    @classmethod
    def from_setting(cls, webhook_allowed_hosts: str) -> OutboundPolicy:
        return cls(parse_allowed_hosts(webhook_allowed_hosts))

    def destination(self, url: object) -> Destination:
        """Check everything about `url` that needs no DNS; raise DestinationRefused with the reason."""
        if not isinstance(url, str) or not url:
            raise DestinationRefused("URL must be a non-empty string")
        if len(url) > MAX_URL_LENGTH:
            raise DestinationRefused(f"URL is longer than {MAX_URL_LENGTH} characters")
        if not _PRINTABLE.fullmatch(url) or "\\" in url:
            raise DestinationRefused(
                "URL must be printable ASCII without spaces or backslashes (percent-encode the path, "
                "write international host names as xn--)"
            )
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise DestinationRefused(f"not a valid URL ({str(exc)[:100]})") from None
        scheme = parsed.scheme
        if scheme not in _DEFAULT_PORTS:
            raise DestinationRefused("URL must start with https://")
        if parsed.userinfo:
            raise DestinationRefused("URL must not contain a user name or password (user@host)")
        host = parsed.raw_host.decode("ascii").lower()
        literal = _parse_host(host)
        host = str(literal) if isinstance(literal, ipaddress.IPv6Address) else host
        port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
        if not 1 <= port <= 65535:
            raise DestinationRefused(f"port {port} is out of range")
        listed = host in self.allowed_hosts
        if scheme == "http" and not listed:
            raise DestinationRefused(f"http:// is only allowed for hosts in WEBHOOK_ALLOWED_HOSTS; use https://{host}")
        if literal is not None and not listed:
            refusal = address_refusal(literal)
            if refusal:
                raise DestinationRefused(f"{literal} is not a public address ({refusal})")
        return Destination(parsed, scheme, host, port, literal, listed)

    def check_addresses(self, destination: Destination, addresses: list[IPAddress]) -> None:
        """Raise DestinationRefused if the host resolved to nothing or to any address we may not reach."""
        if not addresses:
            raise DestinationRefused(f"{destination.host} did not resolve to any address")
        if destination.listed:
            return
        for address in addresses:
            refusal = address_refusal(address)
            if refusal:
                raise DestinationRefused(f"{destination.host} resolves to {address}, not a public address ({refusal})")
