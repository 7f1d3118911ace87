"""Secrets from AWS Secrets Manager, read once at start-up.

On AWS the planes get `<NAME>_SECRET_ARN` instead of the secret itself (no secret in a template, an env var or
user data). `resolve_secret_arns()` fetches each one once and returns an environment with `<NAME>` filled in,
so `Settings.from_env()` never needs to know where a value came from. Locally the plain variables are used.
A secret may be a plain string or a JSON object holding several names (one secret the operator fills with one
command); each ARN is fetched once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

SECRET_NAMES = (
    "TWILIO_AUTH_TOKEN",
    "GEMINI_API_KEY",
    "API_KEY",
    "STREAM_TOKEN_SECRET",
    "TWILIO_ACCOUNT_SID",
    "WEBHOOK_SECRET",
)

SecretFetcher = Callable[[str], str]


def boto3_secret_fetcher(region: str | None = None, endpoint_url: str | None = None) -> SecretFetcher:
    import boto3  # imported lazily: only AWS deployments need it here

    client: Any = boto3.client("secretsmanager", region_name=region or None, endpoint_url=endpoint_url or None)

    def fetch(arn: str) -> str:
        return str(client.get_secret_value(SecretId=arn)["SecretString"])

    return fetch


def resolve_secret_arns(environ: Mapping[str, str], fetch: SecretFetcher | None = None) -> dict[str, str]:
    """Return a copy of `environ` where each `<NAME>_SECRET_ARN` has been read into `<NAME>`.

    A plain `<NAME>` already set wins (handy for local overrides). Raises ValueError naming the variable
    when a secret cannot be read, so start-up fails with one clear line.
    """
    env = dict(environ)
    wanted = [n for n in SECRET_NAMES if env.get(f"{n}_SECRET_ARN") and not env.get(n)]
    if not wanted:
        return env
    fetcher = fetch or boto3_secret_fetcher(env.get("AWS_REGION"), env.get("SECRETS_ENDPOINT_URL"))
    fetched: dict[str, str] = {}
    for name in wanted:
        arn = env[f"{name}_SECRET_ARN"]
        try:
            if arn not in fetched:
                fetched[arn] = fetcher(arn)
        except Exception as exc:  # any SDK failure becomes one start-up line naming the variable
            raise ValueError(f"{name}_SECRET_ARN could not be read: {type(exc).__name__}") from exc
        env[name] = _pick(fetched[arn], name)
    return env


def _pick(secret_string: str, name: str) -> str:
    """A JSON-object secret yields its `name` key (empty if unset); any other secret is the value itself."""
    text = secret_string.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if isinstance(obj, dict):
            return str(obj.get(name) or "").strip()
    return text
