"""`make call TO=+15551234567`: place a phone call through the running server's API, and say where to watch it.

Reads the environment and `.env` like the server does. The API key is `API_KEY`, else the one `make run`
generated (`data/api_key`); the API is `PUBLIC_URL` (the server's own base URL, default http://127.0.0.1:8080),
or `API_URL` when given. `PROMPT` and `GREETING` set the agent for this call.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

import httpx

from call_state.local_setup import read_local_api_key
from call_state.settings import E164, ConfigError, Settings, load_environment

HINTS = {
    401: "the API key was refused: is API_KEY in .env the one the server uses?",
    403: "add the number's country prefix to ALLOWED_DESTINATIONS in .env, then restart `make run`",
    503: "fill in the missing credentials in .env, then restart `make run`",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Place a phone call through the voice agent's API.")
    parser.add_argument("--to", required=True, help="E.164 number, e.g. +15551234567")
    args = parser.parse_args(argv)
    if not E164.match(args.to):
        print(f"TO must be an E.164 number like +15551234567, got {args.to!r}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env(load_environment())
        key = settings.api_key or read_local_api_key(settings)
    except (ConfigError, ValueError) as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if not key:
        print("no API key: set API_KEY in .env, or start `make run` once to generate data/api_key", file=sys.stderr)
        return 2
    base = (os.environ.get("API_URL") or settings.public_url).rstrip("/")
    body = {"destination_number": args.to}
    body.update({name: os.environ[var] for name, var in (("system_prompt", "PROMPT"), ("greeting", "GREETING"))
                 if os.environ.get(var)})  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}
    try:
        response = httpx.post(f"{base}/make-call", json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        print(f"cannot reach {base} ({type(exc).__name__}): is `make run` running?", file=sys.stderr)
        return 1
    if response.status_code != 201:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        hint = HINTS.get(response.status_code, "")
        print(f"make-call failed ({response.status_code}): {message}" + (f"\n{hint}" if hint else ""), file=sys.stderr)
        return 1
    answer = response.json()
    print(f"call {answer['call_id']} ({answer.get('call_sid', '')}): {answer.get('status', '')}")
    print(f"watch it live: {base}/console#/calls/{answer['call_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
