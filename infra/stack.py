"""The one Stack: instantiate the units and wire them together. Settings come from CDK context.

The media plane is one node (default) or, with `-c mediaNodes=N` (N >= 2), a fleet behind a Network Load Balancer.
"""

from __future__ import annotations

import aws_cdk as cdk
from constructs import Construct

from call_state.numbers import ascii_int
from infra.control_api import ControlApi
from infra.media_fleet import MediaFleet
from infra.media_node import MediaNodeHost
from infra.secrets import AppSecrets
from infra.table import CallTable
from infra.webhook_queue import WebhookQueue

SECRET_TEMPLATE = '{"TWILIO_ACCOUNT_SID":"AC...","TWILIO_AUTH_TOKEN":"...","GEMINI_API_KEY":"..."}'  # noqa: S105 - placeholders, not a secret


def context_int(value: object, name: str, default: int, lo: int, hi: int) -> int:
    """An integer CDK context value (`-c name=N`), or a one-line error naming it."""
    if value is None or value == "":
        return default
    number = value if isinstance(value, int) and not isinstance(value, bool) else ascii_int(str(value))
    if number is None or not lo <= number <= hi:
        raise ValueError(f"-c {name} must be an integer {lo}-{hi}, got {value!r}")
    return number


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
        webhooks = WebhookQueue(self, "Webhooks", code=control.code, architecture=control.architecture,
                                table=table.table, secrets=secrets)  # fmt: skip
        control.function.add_environment("WEBHOOK_QUEUE_URL", webhooks.queue_url)
        webhooks.grant_enqueue(control.function)
        nodes = context_int(ctx("mediaNodes"), "mediaNodes", 1, 1, 100)
        grace = context_int(ctx("drainGraceSeconds"), "drainGraceSeconds", 600, 0, 3600)
        instance_type = str(ctx("instanceType") or "t3.small")
        # CONSOLE_ORIGINS: the console is served by the API (API Gateway, or publicUrl); its pages open /browser-stream.
        media_env = {**shared, "MEDIA_STREAM_URL": stream_url or "wss://set-mediaDomain.invalid/stream",
                     "WEBHOOK_QUEUE_URL": webhooks.queue_url, "CONSOLE_ORIGINS": public_url or control.url}  # fmt: skip
        if nodes >= 2:
            if not media_domain:
                raise ValueError("fleet mode (-c mediaNodes=N) needs -c mediaDomain=... for the NLB's certificate")
            fleet = MediaFleet(
                self,
                "MediaFleet",
                table=table.table,
                secrets=secrets,
                environment=media_env,
                domain=media_domain,
                nodes=nodes,
                max_nodes=context_int(ctx("mediaNodesMax"), "mediaNodesMax", 3 * nodes, nodes + 1, 300),
                instance_type=instance_type,
                certificate_arn=str(ctx("mediaCertificateArn") or ""),
                calls_per_node=context_int(ctx("callsPerNode"), "callsPerNode", 40, 1, 10000),
                target_utilization=context_int(ctx("targetCallUtilization"), "targetCallUtilization", 60, 10, 95),
                grace_s=grace,
            )
            cdk.CfnOutput(self, "MediaNlbDns", value=fleet.load_balancer.load_balancer_dns_name,
                          description="point mediaDomain's CNAME here")  # fmt: skip
            cdk.CfnOutput(self, "MediaAsgName", value=fleet.asg_name, description="the media nodes' group")
            webhooks.grant_enqueue(fleet.role)
        else:
            media = MediaNodeHost(
                self,
                "MediaNode",
                table=table.table,
                secrets=secrets,
                environment=media_env,
                instance_type=instance_type,
                domain=media_domain,
                email=email,
                grace_s=grace,
            )
            webhooks.grant_enqueue(media.role)
            cdk.CfnOutput(self, "MediaNodeIp", value=media.elastic_ip.ref,
                          description="point mediaDomain's A record here")  # fmt: skip
            cdk.CfnOutput(self, "MediaNodeInstanceId", value=media.instance.instance_id, description="for SSM sessions")
            rerun = "aws ssm start-associations-once --association-ids <id>: run the release again"
            cdk.CfnOutput(self, "MediaReleaseAssociationId", value=media.association.attr_association_id,
                          description=rerun)  # fmt: skip
        api_url = public_url or control.url
        cdk.CfnOutput(self, "ApiUrl", value=api_url)
        cdk.CfnOutput(self, "MakeCallUrl", value=f"{api_url}/make-call")
        cdk.CfnOutput(self, "IncomingWebhookUrl", value=f"{api_url}/incoming", description="Twilio number: voice POST")
        cdk.CfnOutput(self, "MediaStreamUrl", value=stream_url or "deploy again with -c mediaDomain=... -c email=...")
        cdk.CfnOutput(self, "TableName", value=table.table.table_name)
        cdk.CfnOutput(self, "ProviderSecretArn", value=secrets.provider.secret_arn)
        cdk.CfnOutput(self, "ApiKeySecretArn", value=secrets.api_key.secret_arn)
        cdk.CfnOutput(self, "WebhookSecretArn", value=secrets.webhook_secret.secret_arn,
                      description="WEBHOOK_SECRET: your servers check our tool calls and webhooks with it")  # fmt: skip
        cdk.CfnOutput(self, "WebhookDeadLetterQueueUrl", value=webhooks.dead_letters.queue_url,
                      description="end-of-call webhooks not delivered within 24 h")  # fmt: skip
        cdk.CfnOutput(self, "WebhookRedriveCommand", value=cdk.Fn.join("", [
            "aws sqs start-message-move-task --source-arn ", webhooks.dead_letters.queue_arn,
            " --destination-arn ", webhooks.queue.queue_arn]), description="send them again, once each")  # fmt: skip
        cdk.CfnOutput(
            self,
            "SetSecretCommand",
            value=cdk.Fn.join("", ["aws secretsmanager put-secret-value --secret-id ", secrets.provider.secret_arn,
                                   f" --secret-string '{SECRET_TEMPLATE}'"]),
        )  # fmt: skip
