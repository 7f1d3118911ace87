"""The control plane: FastAPI in Lambda (Mangum) behind an API Gateway HTTP API with throttling and access logs."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_apigatewayv2 as apigwv2
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.bundling import LocalPipBundling
from infra.secrets import AppSecrets

ROOT = Path(__file__).resolve().parent.parent
ACCESS_LOG_FORMAT = (
    '{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","method":"$context.httpMethod",'
    '"path":"$context.path","status":"$context.status","latencyMs":"$context.responseLatency",'
    '"integrationError":"$context.integrationErrorMessage"}'
)


class ControlApi(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        table: dynamodb.ITable,
        secrets: AppSecrets,
        environment: dict[str, str],
        architecture: str = "x86_64",
        throttle_rate: int = 20,
        throttle_burst: int = 40,
    ) -> None:
        super().__init__(scope, cid)
        arch = lambda_.Architecture.ARM_64 if architecture == "arm64" else lambda_.Architecture.X86_64
        self.architecture = arch
        self.code = code = lambda_.Code.from_asset(
            str(ROOT / "lambda_api"),  # the bundler adds call_state and the wheels; this path is only a hash source
            bundling=cdk.BundlingOptions(
                image=lambda_.Runtime.PYTHON_3_12.bundling_image,
                local=LocalPipBundling(ROOT, ["lambda_api", "call_state"], ROOT / "lambda_api" / "requirements.txt",
                                       architecture),
            ),
            asset_hash_type=cdk.AssetHashType.OUTPUT,
        )  # fmt: skip
        self.function = bundle_function(
            self,
            "Function",
            code=code,
            architecture=arch,
            handler="lambda_api.handler.handler",
            memory_size=512,
            timeout_s=15,
            environment={**environment, **secrets.environment(), "CALL_STORE": f"dynamodb://{table.table_name}"},
            description="Phone voice agent control API (FastAPI + Mangum)",
        )
        table.grant_read_write_data(self.function)
        secrets.grant_read(self.function)

        self.api = apigwv2.HttpApi(
            self,
            "HttpApi",
            description="Phone voice agent control API",
            default_integration=integrations.HttpLambdaIntegration("Lambda", self.function),
        )
        access_logs = logs.LogGroup(self, "AccessLogs", retention=logs.RetentionDays.ONE_MONTH)
        stage = self.api.default_stage.node.default_child  # type: ignore[union-attr]
        assert isinstance(stage, apigwv2.CfnStage)
        stage.default_route_settings = apigwv2.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=throttle_rate, throttling_burst_limit=throttle_burst
        )
        stage.access_log_settings = apigwv2.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_logs.log_group_arn, format=ACCESS_LOG_FORMAT
        )

    @property
    def url(self) -> str:
        return self.api.api_endpoint


def bundle_function(
    scope: Construct,
    cid: str,
    *,
    code: lambda_.Code,
    architecture: lambda_.Architecture,
    handler: str,
    memory_size: int,
    timeout_s: int,
    environment: dict[str, str],
    description: str,
) -> lambda_.Function:
    """A function running the control plane's bundle (the API, the webhook consumer): Python 3.12, logs kept a
    month in a log group of its own (`<cid>Logs`)."""
    return lambda_.Function(
        scope,
        cid,
        runtime=lambda_.Runtime.PYTHON_3_12,
        architecture=architecture,
        handler=handler,
        code=code,
        memory_size=memory_size,
        timeout=cdk.Duration.seconds(timeout_s),
        environment=environment,
        log_group=logs.LogGroup(scope, f"{cid}Logs", retention=logs.RetentionDays.ONE_MONTH),
        description=description,
    )
