"""The one Stack: instantiate the units and wire them together. Settings come from CDK context."""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from infra.control_api import ControlApi
from infra.media_node import MediaNodeHost
from infra.secrets import AppSecrets
from infra.table import CallTable

SECRET_TEMPLATE = '{"TWILIO_ACCOUNT_SID":"AC...","TWILIO_AUTH_TOKEN":"...","GEMINI_API_KEY":"..."}'  # noqa: S105 - placeholders, not a secret


class VoiceAgentStack(cdk.Stack):
    def __init__(self, scope: Construct, cid: str, **kwargs: object) -> None:
        super().__init__(scope, cid, **kwargs)  # type: ignore[arg-type]
        ctx = self.node.try_get_context
        media_domain = str(ctx("mediaDomain") or "")
        email = str(ctx("email") or "")
        public_url = str(ctx("publicUrl") or "")  # a custom domain for the API; default: the API's own URL
        stream_url = f"wss://{media_domain}/stream" if media_domain else ""
        shared = {
            "TWILIO_PHONE_NUMBER": str(ctx("twilioPhoneNumber") or ""),
            "ALLOWED_DESTINATIONS": str(ctx("allowedDestinations") or "+1"),
            "GEMINI_MODEL": str(ctx("geminiModel") or "gemini-3.8-live"),
        }
        table = CallTable(self, "Calls", retain=str(ctx("retainTable") or "true").lower() != "false")
        secrets = AppSecrets(self, "Secrets")
        control = ControlApi(
            self,
            "ControlApi",
            table=table.table,
            secrets=secrets,
            environment={
                **shared,
                **({"PUBLIC_URL": public_url} if public_url else {}),
                **({"MEDIA_STREAM_URL": stream_url} if stream_url else {}),
            },
            architecture=str(ctx("lambdaArchitecture") or "x86_64"),
        )
        media = MediaNodeHost(
            self,
            "MediaNode",
            table=table.table,
            secrets=secrets,
            environment={**shared, "MEDIA_STREAM_URL": stream_url or "wss://set-mediaDomain.invalid/stream"},
            instance_type=str(ctx("instanceType") or "t3.small"),
            domain=media_domain,
            email=email,
        )
        api_url = public_url or control.url
        cdk.CfnOutput(self, "ApiUrl", value=api_url)
        cdk.CfnOutput(self, "MakeCallUrl", value=f"{api_url}/make-call")
        cdk.CfnOutput(self, "IncomingWebhookUrl", value=f"{api_url}/incoming", description="Twilio number: voice POST")
        cdk.CfnOutput(self, "MediaNodeIp", value=media.elastic_ip.ref, description="point mediaDomain's A record here")
        cdk.CfnOutput(self, "MediaNodeInstanceId", value=media.instance.instance_id, description="for SSM sessions")
        cdk.CfnOutput(self, "MediaStreamUrl", value=stream_url or "deploy again with -c mediaDomain=... -c email=...")
        cdk.CfnOutput(self, "TableName", value=table.table.table_name)
        cdk.CfnOutput(self, "ProviderSecretArn", value=secrets.provider.secret_arn)
        cdk.CfnOutput(self, "ApiKeySecretArn", value=secrets.api_key.secret_arn)
        cdk.CfnOutput(
            self,
            "SetSecretCommand",
            value=cdk.Fn.join("", ["aws secretsmanager put-secret-value --secret-id ", secrets.provider.secret_arn,
                                   f" --secret-string '{SECRET_TEMPLATE}'"]),
        )  # fmt: skip
