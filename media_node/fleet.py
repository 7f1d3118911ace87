"""What a fleet node (AWS fleet mode: Auto Scaling group behind the NLB) runs beside the media node.

    python -m media_node.fleet --asg NAME --hook drain --ports 8081,8082 --capacity 40

A separate process (systemd unit voice-agent-fleet, installed by `install.sh --fleet-asg`), so it sees the whole
instance across a blue/green switch and needs nothing from the media node but its `/healthz`:
- every 60 s it sums the colours' active calls and publishes `ActiveCalls`, `CallCapacity` and `CallUtilization`
  (percent) with PutMetricData (namespace VoiceAgent, dimension AutoScalingGroupName only, so the group's
  target-tracking policy averages utilisation over its nodes);
- every 5 s it reads the instance's target lifecycle state from IMDSv2. Once it is `Terminated` (scale-in, a
  rolling update, an instance refresh) it stops both colours; each drains (no new streams, calls in progress
  finish, up to DRAIN_GRACE_SECONDS) and exits. Then it completes the lifecycle hook (CONTINUE), retrying while
  the instance has not reached Terminating:Wait yet (the NLB's deregistration delay comes first).

IMDS polling instead of an EventBridge rule + SSM command: nothing else to deploy or permit, and it sees every
kind of termination the same way. The rules are plain functions (`colour_health`, `node_load`, `metric_data`,
`hook_not_ready`); the loops take their HTTP client, boto3 clients and the colour-stopping command as arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

log = logging.getLogger("media_node.fleet")

NAMESPACE = "VoiceAgent"
IMDS_URL = "http://169.254.169.254/latest"
TERMINATING = "Terminated"  # IMDS autoscaling/target-lifecycle-state once the group terminates this instance
MAX_HEALTH_BYTES = 4096


@dataclass(frozen=True)
class NodeLoad:
    active_calls: int
    capacity: int
    draining: bool


@dataclass(frozen=True)
class ColourHealth:
    active_calls: int
    capacity: int | None  # MAX_CONCURRENT_CALLS, when /healthz says it
    draining: bool


def _count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value <= 1_000_000 else None  # bool is not a count


def colour_health(status: int, body: bytes) -> ColourHealth | None:
    """One colour's /healthz (200 ok, 503 draining or full); None if it is down or the answer is garbled."""
    if status not in (200, 503) or len(body) > MAX_HEALTH_BYTES:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or (calls := _count(data.get("active_calls"))) is None:
        return None
    return ColourHealth(calls, _count(data.get("capacity")) or None, data.get("status") == "draining")


def node_load(colours: Sequence[ColourHealth | None], default_capacity: int, draining: bool) -> NodeLoad:
    """The instance as a whole: calls on every colour that answered; its capacity is the serving colour's (a
    colour draining after a switch adds calls, not room); none left once the node itself drains."""
    up = [c for c in colours if c is not None]
    capacities = [c.capacity for c in up if c.capacity and not c.draining]
    capacity = 0 if draining else max(capacities, default=default_capacity)
    return NodeLoad(sum(c.active_calls for c in up), capacity, draining)


def metric_data(load: NodeLoad, asg: str, at: datetime) -> list[dict[str, Any]]:
    """PutMetricData `MetricData` for one sample. A draining node reports its calls but no utilisation, so it
    neither holds the group up nor pulls its average down while it empties."""
    dims = [{"Name": "AutoScalingGroupName", "Value": asg}]
    data: list[dict[str, Any]] = [
        {"MetricName": "ActiveCalls", "Dimensions": dims, "Timestamp": at, "Value": float(load.active_calls),
         "Unit": "Count"},
        {"MetricName": "CallCapacity", "Dimensions": dims, "Timestamp": at, "Value": float(load.capacity),
         "Unit": "Count"},
    ]  # fmt: skip
    if not load.draining and load.capacity > 0:
        utilisation = min(100.0, 100.0 * load.active_calls / load.capacity)
        data.append({"MetricName": "CallUtilization", "Dimensions": dims, "Timestamp": at,
                     "Value": math.floor(utilisation * 10) / 10, "Unit": "Percent"})  # fmt: skip
    return data


def hook_not_ready(error: Exception) -> bool:
    """CompleteLifecycleAction before Terminating:Wait fails with this ValidationError: try again later."""
    response = getattr(error, "response", None)
    err = response.get("Error", {}) if isinstance(response, dict) else {}
    return err.get("Code") == "ValidationError" and "No active Lifecycle Action" in str(err.get("Message", ""))


class Imds:
    """IMDSv2: a session token (PUT), then GETs carrying it; a 401 means the token expired and is renewed."""

    def __init__(self, http: httpx.AsyncClient, base_url: str = IMDS_URL) -> None:
        self.http, self.base_url = http, base_url
        self._token = ""

    async def get(self, path: str) -> str | None:
        for _ in range(2):
            if not self._token:
                put = await self.http.put(f"{self.base_url}/api/token",
                                          headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"})  # fmt: skip
                put.raise_for_status()
                self._token = put.text
            answer = await self.http.get(f"{self.base_url}/meta-data/{path}",
                                         headers={"X-aws-ec2-metadata-token": self._token})  # fmt: skip
            if answer.status_code == 401:
                self._token = ""
                continue
            if answer.status_code == 404:
                return None
            answer.raise_for_status()
            return answer.text.strip()[:128]
        return None


class FleetAgent:
    def __init__(
        self, *, asg: str, hook: str, ports: Sequence[int], capacity: int, imds: Imds, http: httpx.AsyncClient,
        cloudwatch: Any, autoscaling: Any, stop_colours: Callable[[], Awaitable[None]],
        metrics_every_s: float = 60.0, poll_every_s: float = 5.0, retry_every_s: float = 10.0,
        give_up_after: int = 720,
    ) -> None:  # fmt: skip
        self.asg, self.hook, self.ports, self.capacity = asg, hook, list(ports), capacity
        self.imds, self.http, self.cloudwatch, self.autoscaling = imds, http, cloudwatch, autoscaling
        self.stop_colours = stop_colours
        self.metrics_every_s, self.poll_every_s, self.retry_every_s = metrics_every_s, poll_every_s, retry_every_s
        self.give_up_after = give_up_after  # hook completion attempts (at 10 s: two hours, the longest hook)
        self.draining = False
        self.done = asyncio.Event()

    async def run(self) -> None:
        """Until the lifecycle hook is completed (the instance is going away) or the process is stopped."""
        async with asyncio.TaskGroup() as tasks:
            metrics = tasks.create_task(self._every(self.metrics_every_s, self.publish), name="fleet-metrics")
            await self.watch_lifecycle()
            metrics.cancel()

    async def load(self) -> NodeLoad:
        colours: list[ColourHealth | None] = []
        for port in self.ports:
            try:
                answer = await self.http.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
                colours.append(colour_health(answer.status_code, answer.content))
            except httpx.HTTPError:
                colours.append(None)  # that colour is not running: normal for the idle one
        return node_load(colours, self.capacity, self.draining)

    async def publish(self) -> None:
        load = await self.load()
        try:
            await asyncio.to_thread(self.cloudwatch.put_metric_data, Namespace=NAMESPACE,
                                    MetricData=metric_data(load, self.asg, datetime.now(UTC)))  # fmt: skip
        except Exception as exc:  # metrics are best effort: the next sample comes in a minute
            log.warning("PutMetricData failed: %s", str(exc)[:200])

    async def watch_lifecycle(self) -> None:
        while True:
            try:
                state = await self.imds.get("autoscaling/target-lifecycle-state")
            except httpx.HTTPError as exc:
                log.warning("IMDS lifecycle state unavailable: %s", str(exc)[:200])
                state = None
            if state == TERMINATING:
                break
            await asyncio.sleep(self.poll_every_s)
        instance_id = await self.imds.get("instance-id") or ""
        log.info("instance %s is terminating: draining both colours", instance_id[:32])
        self.draining = True
        await self.publish()
        await self.stop_colours()
        log.info("colours stopped: completing lifecycle hook %s", self.hook)
        await self.on_drained(instance_id)

    async def on_drained(self, instance_id: str) -> bool:
        """Let the group terminate this instance: its last call has ended, or the grace ran out."""
        for _ in range(self.give_up_after):
            try:
                await asyncio.to_thread(
                    self.autoscaling.complete_lifecycle_action, LifecycleHookName=self.hook,
                    AutoScalingGroupName=self.asg, InstanceId=instance_id, LifecycleActionResult="CONTINUE",
                )  # fmt: skip
                log.info("lifecycle hook completed for %s", instance_id[:32])
                self.done.set()
                return True
            except Exception as exc:
                if not hook_not_ready(exc):
                    log.warning("CompleteLifecycleAction failed (retrying): %s", str(exc)[:200])
            await asyncio.sleep(self.retry_every_s)
        log.error("gave up completing the lifecycle hook: the group's heartbeat timeout will end it")
        return False

    async def _every(self, period_s: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await job()
            await asyncio.sleep(period_s)


async def stop_units(units: Sequence[str]) -> None:
    """`systemctl stop` waits for each unit's drain (bounded by its TimeoutStopSec)."""
    proc = await asyncio.create_subprocess_exec("systemctl", "stop", *units)
    await proc.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m media_node.fleet", description="fleet node metrics and drain")
    parser.add_argument("--asg", required=True, help="Auto Scaling group name")
    parser.add_argument("--hook", default="drain", help="termination lifecycle hook name")
    parser.add_argument("--ports", default="8081,8082", help="the colours' loopback ports")
    parser.add_argument("--capacity", type=int, default=100, help="MAX_CONCURRENT_CALLS, if /healthz does not say")
    parser.add_argument("--region", default="", help="AWS region (default: the instance's, from IMDS)")
    args = parser.parse_args(argv)
    ports = [int(p) for p in args.ports.split(",") if p.strip().isascii() and p.strip().isdigit()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    asyncio.run(_serve(args.asg, args.hook, ports, max(1, args.capacity), args.region))


async def _serve(asg: str, hook: str, ports: list[int], capacity: int, region: str) -> None:
    import boto3

    async with httpx.AsyncClient(timeout=5.0) as http:
        imds = Imds(http)
        region = region or await imds.get("placement/region") or ""
        units = [f"voice-agent@{colour}.service" for colour in ("blue", "green")]
        agent = FleetAgent(
            asg=asg, hook=hook, ports=ports, capacity=capacity, imds=imds, http=http,
            cloudwatch=boto3.client("cloudwatch", region_name=region),
            autoscaling=boto3.client("autoscaling", region_name=region), stop_colours=lambda: stop_units(units),
        )  # fmt: skip
        await agent.run()


if __name__ == "__main__":
    main()
