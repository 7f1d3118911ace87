"""media_node/fleet.py: the fleet node's metrics and termination drain.

The rules are plain functions; the agent runs against a real media node (uvicorn on loopback, a live call on it),
an IMDSv2 stand-in as an httpx transport (tokens required, as on EC2), CloudWatch in moto, and the Auto Scaling
API through botocore's Stubber (real request validation against the service model).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from media_node.fleet import (
    NAMESPACE,
    ColourHealth,
    FleetAgent,
    Imds,
    NodeLoad,
    colour_health,
    hook_not_ready,
    metric_data,
    node_load,
)
from tests.standins.gemini_server import GeminiStandIn
from tests.standins.media_harness import media_node
from tests.standins.processes import free_port

AT = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_metric_data_reports_calls_capacity_and_utilisation() -> None:
    data = {d["MetricName"]: d for d in metric_data(NodeLoad(7, 40, False), "VoiceAgent-media", AT)}
    assert set(data) == {"ActiveCalls", "CallCapacity", "CallUtilization"}
    assert data["ActiveCalls"]["Value"] == 7.0 and data["CallCapacity"]["Value"] == 40.0
    assert data["CallUtilization"]["Value"] == 17.5 and data["CallUtilization"]["Unit"] == "Percent"
    for d in data.values():  # one dimension: the policy averages over the group, and it is one metric each
        assert d["Dimensions"] == [{"Name": "AutoScalingGroupName", "Value": "VoiceAgent-media"}]
        assert d["Timestamp"] == AT


def test_a_draining_node_reports_calls_but_no_utilisation() -> None:
    load = node_load([ColourHealth(3, 40, False), None], 40, draining=True)
    assert load == NodeLoad(3, 0, True)
    names = [d["MetricName"] for d in metric_data(load, "g", AT)]
    assert names == ["ActiveCalls", "CallCapacity"]


def test_utilisation_is_capped_and_counts_both_colours() -> None:
    # Mid-switch: the old colour still holds calls but adds no room; the new one says its capacity.
    load = node_load([ColourHealth(30, 40, True), ColourHealth(25, 50, False)], 40, draining=False)
    assert load == NodeLoad(55, 50, False)
    assert node_load([ColourHealth(2, None, False), None], 40, draining=False).capacity == 40  # not reported
    (utilisation,) = [d for d in metric_data(load, "g", AT) if d["MetricName"] == "CallUtilization"]
    assert utilisation["Value"] == 100.0


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"status":"ok","active_calls":4,"version":"1"}', ColourHealth(4, None, False)),
        (200, b'{"status":"ok","active_calls":4,"capacity":40}', ColourHealth(4, 40, False)),
        (503, b'{"status":"draining","active_calls":2,"capacity":40}', ColourHealth(2, 40, True)),
        (503, b'{"status":"full","active_calls":40,"capacity":40}', ColourHealth(40, 40, False)),
        (200, b'{"active_calls":4,"capacity":true}', ColourHealth(4, None, False)),
        (200, b'{"active_calls":4,"capacity":-5}', ColourHealth(4, None, False)),
        (502, b'{"active_calls":4}', None),  # nginx answering for a dead colour
        (200, b"not json", None),
        (200, b"[1, 2]", None),
        (200, b'{"active_calls":true}', None),
        (200, b'{"active_calls":"\xd9\xa3"}', None),  # an Arabic-Indic digit as a string
        (200, b'{"active_calls":-1}', None),
        (200, b'{"active_calls":1e309}', None),
        (200, b'{"active_calls":1}' + b" " * 5000, None),  # oversized
    ],
)
def test_colour_health_accepts_only_sane_counts(status: int, body: bytes, expected: ColourHealth | None) -> None:
    assert colour_health(status, body) == expected


def test_hook_not_ready_is_the_only_retryable_refusal() -> None:
    def error(code: str, message: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": message}}, "CompleteLifecycleAction")

    assert hook_not_ready(error("ValidationError", "No active Lifecycle Action found with instance ID i-1"))
    assert not hook_not_ready(error("ValidationError", "No lifecycle hook found with name drain"))
    assert not hook_not_ready(error("AccessDenied", "No active Lifecycle Action"))
    assert not hook_not_ready(RuntimeError("boom"))


class ImdsStandIn:
    """IMDSv2 as EC2 serves it: PUT /api/token with a TTL header, then GETs that carry the token."""

    def __init__(self, states: list[str]) -> None:
        self.states = states  # target-lifecycle-state answers, the last one repeats
        self.tokens_issued = 0
        self.rejected = 0
        self.valid = ""

    def expire(self) -> None:
        """The token's TTL ran out: the next GET with it is refused."""
        self.valid = "expired"

    def transport(self) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            path = request.url.path
            if request.method == "PUT" and path == "/latest/api/token":
                if "x-aws-ec2-metadata-token-ttl-seconds" not in request.headers:
                    return httpx.Response(400)
                self.tokens_issued += 1
                self.valid = f"token-{self.tokens_issued}"
                return httpx.Response(200, text=self.valid)
            if request.headers.get("x-aws-ec2-metadata-token") != self.valid:
                self.rejected += 1
                return httpx.Response(401)
            if path == "/latest/meta-data/autoscaling/target-lifecycle-state":
                state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
                return httpx.Response(200, text=state + "\n")
            if path == "/latest/meta-data/instance-id":
                return httpx.Response(200, text="i-0123456789abcdef0")
            return httpx.Response(404)

        return httpx.MockTransport(answer)


async def test_imds_v2_token_is_sent_and_renewed() -> None:
    imds_standin = ImdsStandIn(["InService"])
    async with httpx.AsyncClient(transport=imds_standin.transport()) as http:
        imds = Imds(http)
        assert await imds.get("autoscaling/target-lifecycle-state") == "InService"
        assert await imds.get("instance-id") == "i-0123456789abcdef0"
        assert imds_standin.tokens_issued == 1  # one token for many reads
        imds_standin.expire()
        assert await imds.get("instance-id") == "i-0123456789abcdef0"
        assert imds_standin.tokens_issued == 2 and imds_standin.rejected == 1
        assert await imds.get("no/such/path") is None


async def test_agent_publishes_then_drains_and_completes_the_hook(tmp_path: Path) -> None:
    imds_standin = ImdsStandIn(["InService", "InService", "Terminated"])
    stopped: list[float] = []
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name="us-east-1")
        autoscaling = boto3.client("autoscaling", region_name="us-east-1")
        expected = {"LifecycleHookName": "drain", "AutoScalingGroupName": "Voice-media",
                    "InstanceId": "i-0123456789abcdef0", "LifecycleActionResult": "CONTINUE"}  # fmt: skip
        with Stubber(autoscaling) as stub:
            # Still in the NLB's deregistration delay: not yet Terminating:Wait, so the first try is refused.
            stub.add_client_error("complete_lifecycle_action", "ValidationError",
                                  "No active Lifecycle Action found with instance ID i-0123456789abcdef0",
                                  expected_params=expected)  # fmt: skip
            stub.add_response("complete_lifecycle_action", {}, expected_params=expected)
            async with GeminiStandIn() as gemini, media_node(gemini.url, tmp_path, max_concurrent_calls=40) as h:
                h.new_call("fleet-1")
                caller = await h.caller("fleet-1").connect()
                await caller.wait_for(lambda: h.node.active_calls == 1)

                async def stop_colours() -> None:  # what `systemctl stop` of both colours amounts to
                    h.node.start_drain()
                    await caller.stop()
                    await h.node.wait_idle(10)
                    stopped.append(time.monotonic())

                async with httpx.AsyncClient(transport=imds_standin.transport()) as imds_http, \
                        httpx.AsyncClient() as http:  # fmt: skip
                    agent = FleetAgent(
                        asg="Voice-media", hook="drain", ports=[h.node.settings.port, free_port()], capacity=40,
                        imds=Imds(imds_http), http=http, cloudwatch=cloudwatch, autoscaling=autoscaling,
                        stop_colours=stop_colours, metrics_every_s=0.05, poll_every_s=0.05, retry_every_s=0.01,
                    )  # fmt: skip
                    await asyncio.wait_for(agent.run(), 20)
            stub.assert_no_pending_responses()
        assert agent.done.is_set() and len(stopped) == 1
        stats = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName="ActiveCalls", Statistics=["Maximum", "Minimum"], Period=60,
            Dimensions=[{"Name": "AutoScalingGroupName", "Value": "Voice-media"}],
            StartTime=datetime.now(UTC) - timedelta(minutes=5), EndTime=datetime.now(UTC) + timedelta(minutes=1),
        )  # fmt: skip
        points: list[dict[str, Any]] = stats["Datapoints"]
        assert points and max(p["Maximum"] for p in points) == 1.0  # the live call, counted from /healthz
        utilisation = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE, MetricName="CallUtilization", Statistics=["Maximum"], Period=60,
            Dimensions=[{"Name": "AutoScalingGroupName", "Value": "Voice-media"}],
            StartTime=datetime.now(UTC) - timedelta(minutes=5), EndTime=datetime.now(UTC) + timedelta(minutes=1),
        )  # fmt: skip
        assert max(p["Maximum"] for p in utilisation["Datapoints"]) == 2.5  # 1 call of 40


async def test_metrics_failures_never_stop_the_agent(tmp_path: Path) -> None:
    class BrokenCloudWatch:
        calls = 0

        def put_metric_data(self, **_: Any) -> None:
            self.calls += 1
            raise ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, "PutMetricData")

    cloudwatch = BrokenCloudWatch()
    async with httpx.AsyncClient() as http:
        agent = FleetAgent(
            asg="g", hook="drain", ports=[free_port()], capacity=10, imds=Imds(http, "http://127.0.0.1:9"),
            http=http, cloudwatch=cloudwatch, autoscaling=None, stop_colours=asyncio.sleep,  # type: ignore[arg-type]
        )  # fmt: skip
        await agent.publish()
        await agent.publish()
    assert cloudwatch.calls == 2
