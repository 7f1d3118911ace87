"""Secrets Manager: what both planes read at start. No secret value is in the template, env vars or user data.

- `provider`: one JSON secret the operator fills with one command (Twilio account + token, Gemini key);
- `api_key`, `stream_token`, `webhook_secret`: generated here, because we own them (read the webhook secret with the
  WebhookSecretArn output and give it to the servers that receive our tool calls and webhooks).
The planes get `<NAME>_SECRET_ARN` variables and resolve them at start (call_state/secrets.py).
"""

from __future__ import annotations

import json

from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

PROVIDER_KEYS = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "GEMINI_API_KEY")


class AppSecrets(Construct):
    def __init__(self, scope: Construct, cid: str) -> None:
        super().__init__(scope, cid)
        self.provider = secretsmanager.Secret(
            self,
            "ProviderCredentials",
            description="Twilio and Gemini credentials: set with the SetSecretCommand output",
            generate_secret_string=secretsmanager.SecretStringGenerator(  # placeholder until the operator sets it
                secret_string_template=json.dumps(dict.fromkeys(PROVIDER_KEYS, "")),
                generate_string_key="unset",
                exclude_punctuation=True,
            ),
        )
        self.api_key = self._generated("ApiKey", "Bearer key for /make-call and /calls")
        self.stream_token = self._generated("StreamTokenSecret", "HMAC key binding media streams to calls")
        self.webhook_secret = self._generated("WebhookSecret", "HMAC key signing tool calls and end-of-call webhooks")

    def _generated(self, cid: str, description: str) -> secretsmanager.Secret:
        return secretsmanager.Secret(
            self,
            cid,
            description=description,
            generate_secret_string=secretsmanager.SecretStringGenerator(exclude_punctuation=True, password_length=48),
        )

    def environment(self) -> dict[str, str]:
        arns = {f"{key}_SECRET_ARN": self.provider.secret_arn for key in PROVIDER_KEYS}
        arns["API_KEY_SECRET_ARN"] = self.api_key.secret_arn
        arns["STREAM_TOKEN_SECRET_SECRET_ARN"] = self.stream_token.secret_arn
        arns["WEBHOOK_SECRET_SECRET_ARN"] = self.webhook_secret.secret_arn
        return arns

    def grant_read(self, grantee: iam.IGrantable) -> None:
        for secret in (self.provider, self.api_key, self.stream_token, self.webhook_secret):
            secret.grant_read(grantee)
