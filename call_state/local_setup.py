"""What the all-in-one server does for a newcomer at start-up (`make run`), as small functions of their own.

- `persistent_secret()`: a secret generated on first start and kept with the local data (mode 600), so it
  survives restarts and is never printed: the API key when `API_KEY` is unset (and any other such secret).
- `with_local_webhook_secret()`: the same for `WEBHOOK_SECRET` (it signs our tool calls and webhooks).
- `with_local_api_key()`: settings with that key filled in, and the one start-up line saying where the console is
  and how to read the key.
- `public_url_warning()`: the WARNING for Twilio credentials with a loopback `PUBLIC_URL` (Twilio cannot reach it).
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import replace
from pathlib import Path

from call_state.settings import Settings

API_KEY_FILE = "api_key"
WEBHOOK_SECRET_FILE = "webhook_secret"  # noqa: S105 - a file name (docs/webhooks.md says where it is)


def local_data_dir(settings: Settings) -> Path:
    """Where the local data lives: beside the SQLite file (default `./data`), else `./data`."""
    if settings.call_store.startswith("sqlite:///"):
        return Path(settings.call_store.removeprefix("sqlite:///")).parent
    return Path("data")


def persistent_secret(path: Path, nbytes: int = 24, prefix: str = "") -> tuple[str, bool]:
    """The secret stored at `path`, created (mode 600, never overwritten) when missing. Returns (value, created).

    The file appears complete or not at all (written aside, then hard-linked into place, which fails if it exists),
    so two processes starting together (a blue/green overlap) agree on one secret. Raises ValueError naming the
    file when it holds no usable secret (the caller turns that into one line, exit 2).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return _existing_secret(path), False
    value = prefix + secrets.token_urlsafe(nbytes)
    aside = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        os.link(aside, path)
    except FileExistsError:  # another process won the race: use its secret
        return _existing_secret(path), False
    finally:
        aside.unlink(missing_ok=True)
    return value, True


def with_local_webhook_secret(settings: Settings) -> Settings:
    """Settings with a WEBHOOK_SECRET (made on first start when unset). Unlike the per-process stream token secret
    it must survive restarts: users configure it in the servers that receive our tool calls and webhooks."""
    if settings.webhook_secret:
        return settings
    value, _ = persistent_secret(local_data_dir(settings) / WEBHOOK_SECRET_FILE, 32, prefix="whsec_")
    return replace(settings, webhook_secret=value)


def _existing_secret(path: Path) -> str:
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        path.chmod(0o600)  # someone loosened it: a secret is for its owner only
    existing = path.read_text(encoding="utf-8").strip()
    if len(existing) < 16:
        raise ValueError(f"{path} must hold a secret of at least 16 characters (delete it to make a new one)")
    return existing


def read_local_api_key(settings: Settings) -> str | None:
    """The key `make run` generated, for local tools (`make call`); None when there is none yet."""
    path = local_data_dir(settings) / API_KEY_FILE
    return _existing_secret(path) if path.is_file() else None


def console_url(settings: Settings) -> str:
    return f"{settings.public_url.rstrip('/')}/console"


def with_local_api_key(settings: Settings) -> tuple[Settings, str]:
    """Settings with an API key (generated on first start when unset), and the start-up line about the console."""
    if settings.api_key:
        return settings, f"console: {console_url(settings)} (sign in with API_KEY from your environment or .env)"
    path = local_data_dir(settings) / API_KEY_FILE
    key, created = persistent_secret(path)
    made = "generated a new API key" if created else "API key kept from an earlier start"
    line = f"console: {console_url(settings)} ({made}; read it with: cat {path})"
    return replace(settings, api_key=key), line


def is_loopback_url(url: str) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]") or host.startswith("127.")


def public_url_warning(settings: Settings) -> str | None:
    """A warning when phone calls are configured but Twilio could never reach this server, else None."""
    if not (settings.twilio_account_sid and settings.twilio_auth_token) or not is_loopback_url(settings.public_url):
        return None
    return (
        f"PUBLIC_URL is {settings.public_url}: Twilio cannot reach it, so phone calls will fail when answered. "
        f"Start a tunnel to port {settings.port} (cloudflared tunnel --url http://localhost:{settings.port}, "
        f"or ngrok http {settings.port}) and set PUBLIC_URL to its https URL in .env (README: Your first phone call)"
    )
