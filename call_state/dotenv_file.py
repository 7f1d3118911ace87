"""The `.env` file: read it (KEY=VALUE lines, quotes, comments) and add it to the environment without overriding."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a .env file: KEY=VALUE lines, optional quotes, '#' comments. Malformed lines are skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            values[key] = value
    return values


def load_environment(environ: Mapping[str, str] | None = None, dotenv: Path | None = None) -> dict[str, str]:
    """The process environment plus `.env` (when present); real variables always win."""
    env = dict(os.environ if environ is None else environ)
    for key, value in read_dotenv(dotenv or Path(".env")).items():
        env.setdefault(key, value)
    return env
