"""Fleet mode of the CDK app (`-c mediaNodes=N`): the Auto Scaling group in two AZs behind the NLB, and everything
that keeps calls alive through scale-in and rolling updates. Synthesized with bundling skipped (no pip run);
cdk-nag runs in the synth (an unacknowledged finding raises), cfn-lint on the template.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from infra.media_fleet import NAMESPACE as INFRA_NAMESPACE
from infra.nag import add_checks
from infra.stack import VoiceAgentStack
from media_node.fleet import NAMESPACE
from tests.test_infra_stack import CONTEXT, cfn_lint, resources

FLEET = {**CONTEXT, "mediaNodes": "3"}


def synth(tmp_path: Path, **context: str) -> tuple[Template, dict[str, Any], Path]:
    out = tmp_path / "cdk.out"
    app = cdk.App(context={**FLEET, **context}, outdir=str(out))
    stack = VoiceAgentStack(app, "VoiceAgentFleet")
    add_checks(app, stack)
    app.synth()  # raises on any cdk-nag finding without an acknowledgement
    template = Template.from_stack(stack)
    return template, template.to_json(), out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Template, dict[str, Any], Path]:
    return synth(tmp_path_factory.mktemp("fleet"))


def logical_id(raw: dict[str, Any], kind: str) -> str:
    (found,) = [k for k, v in raw["Resources"].items() if v["Type"] == kind]
    return found


def test_group_spans_two_azs_and_rolls_one_node_at_a_time(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    _, raw, _ = fleet
    (group,) = resources(raw, "AWS::AutoScaling::AutoScalingGroup")
    props = group["Properties"]
    assert props["MinSize"] == "3" and props["MaxSize"] == "9"
    subnets = [s["Ref"] for s in props["VPCZoneIdentifier"]]
    zones = {json.dumps(raw["Resources"][s]["Properties"]["AvailabilityZone"]) for s in subnets}
    assert len(subnets) == 2 and len(zones) == 2  # two subnets in two different AZs
    assert props.get("HealthCheckType", "EC2") == "EC2"  # ELB checks would replace a node for being full
    rolling = group["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MinInstancesInService"] == 3 and rolling["MaxBatchSize"] == 1
    assert rolling["WaitOnResourceSignals"] is True
    assert group["CreationPolicy"]["ResourceSignal"]["Count"] == 3
    assert props["LaunchTemplate"]["Version"] == {"Fn::GetAtt": [logical_id(raw, "AWS::EC2::LaunchTemplate"),
                                                                 "LatestVersionNumber"]}  # fmt: skip
    for kind in ("AWS::EC2::Instance", "AWS::EC2::EIP", "AWS::SSM::Association"):
        assert not resources(raw, kind), kind  # the single node's parts are not in a fleet


def test_nodes_install_the_release_and_signal_when_healthy(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    template, raw, _ = fleet
    template.has_resource_properties("AWS::EC2::LaunchTemplate", {"LaunchTemplateData": Match.object_like({
        "MetadataOptions": {"HttpTokens": "required"},
        "BlockDeviceMappings": [Match.object_like({"Ebs": Match.object_like({"Encrypted": True})})],
    })})  # fmt: skip
    (lt,) = resources(raw, "AWS::EC2::LaunchTemplate")
    script = json.dumps(lt["Properties"]["LaunchTemplateData"]["UserData"])
    assert "media_node/deploy/install.sh --mode media --non-interactive --release-id " in script
    assert "--fleet-asg " in script and "--fleet-hook drain" in script and "MAX_CONCURRENT_CALLS=40" in script
    assert "MEDIA_STREAM_URL=wss://media.example.com/stream" in script
    assert "cloud-init status --wait" not in script  # inside user data it would wait for itself
    assert "signal SUCCESS" in script and "trap 'signal FAILURE' ERR" in script
    assert f"--logical-resource-id {logical_id(raw, 'AWS::AutoScaling::AutoScalingGroup')}" in script
    assert "certbot" not in script and "--domain" not in script  # TLS ends at the NLB


def test_nlb_ends_tls_on_443_with_a_dns_validated_certificate(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    template, raw, _ = fleet
    template.has_resource_properties("AWS::ElasticLoadBalancingV2::LoadBalancer", {
        "Type": "network", "Scheme": "internet-facing", "Subnets": Match.any_value(),
        "SecurityGroups": Match.any_value(),
    })  # fmt: skip
    template.has_resource_properties("AWS::CertificateManager::Certificate",
                                     {"DomainName": "media.example.com", "ValidationMethod": "DNS"})  # fmt: skip
    template.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", {
        "Port": 443, "Protocol": "TLS", "SslPolicy": Match.string_like_regexp("TLS13"),
        "Certificates": [{"CertificateArn": {"Ref": logical_id(raw, "AWS::CertificateManager::Certificate")}}],
    })  # fmt: skip
    assert "MediaNlbDns" in raw["Outputs"] and "MediaNodeIp" not in raw["Outputs"]


def test_an_existing_certificate_can_be_given_instead(tmp_path: Path) -> None:
    arn = "arn:aws:acm:us-east-1:111122223333:certificate/00000000-0000-0000-0000-000000000000"
    template, raw, _ = synth(tmp_path, mediaCertificateArn=arn)
    assert not resources(raw, "AWS::CertificateManager::Certificate")
    listener = {"Certificates": [{"CertificateArn": arn}]}
    template.has_resource_properties("AWS::ElasticLoadBalancingV2::Listener", listener)


def test_target_group_checks_healthz_and_drains_for_the_grace(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    _, raw, _ = fleet
    (group,) = resources(raw, "AWS::ElasticLoadBalancingV2::TargetGroup")
    props = group["Properties"]
    assert (props["Protocol"], props["Port"], props["TargetType"]) == ("TCP", 80, "instance")
    health = (props["HealthCheckProtocol"], props["HealthCheckPath"], props["Matcher"])
    assert health == ("HTTP", "/healthz", {"HttpCode": "200"})
    attributes = {a["Key"]: a["Value"] for a in props["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "600"  # DRAIN_GRACE_SECONDS' default
    assert attributes["target_health_state.unhealthy.connection_termination.enabled"] == "false"
    (asg,) = resources(raw, "AWS::AutoScaling::AutoScalingGroup")
    target_group = logical_id(raw, "AWS::ElasticLoadBalancingV2::TargetGroup")
    assert asg["Properties"]["TargetGroupARNs"] == [{"Ref": target_group}]


def test_lifecycle_hook_holds_a_terminating_node_for_its_drain(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    template, raw, _ = fleet
    template.has_resource_properties("AWS::AutoScaling::LifecycleHook", {
        "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING", "LifecycleHookName": "drain",
        "DefaultResult": "CONTINUE", "HeartbeatTimeout": 900,
        "AutoScalingGroupName": {"Ref": logical_id(raw, "AWS::AutoScaling::AutoScalingGroup")},
    })  # fmt: skip
    policies = json.dumps(resources(raw, "AWS::IAM::Policy"))
    assert "autoscaling:CompleteLifecycleAction" in policies and ":autoScalingGroupName/" in policies
    assert "cloudformation:SignalResource" in policies


def test_drain_grace_is_one_setting(tmp_path: Path) -> None:
    template, raw, _ = synth(tmp_path, drainGraceSeconds="300")
    (group,) = resources(raw, "AWS::ElasticLoadBalancingV2::TargetGroup")
    attributes = {a["Key"]: a["Value"] for a in group["Properties"]["TargetGroupAttributes"]}
    assert attributes["deregistration_delay.timeout_seconds"] == "300"
    template.has_resource_properties("AWS::AutoScaling::LifecycleHook", {"HeartbeatTimeout": 600})
    (lt,) = resources(raw, "AWS::EC2::LaunchTemplate")
    assert "--grace 300" in json.dumps(lt["Properties"]["LaunchTemplateData"]["UserData"])


def test_scales_on_call_utilisation_published_by_the_nodes(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    template, raw, _ = fleet
    template.has_resource_properties("AWS::AutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingConfiguration": {"TargetValue": 60, "CustomizedMetricSpecification": {
            "Namespace": NAMESPACE, "MetricName": "CallUtilization", "Statistic": "Average",
            "Dimensions": [{"Name": "AutoScalingGroupName", "Value": Match.any_value()}]}},
    })  # fmt: skip
    assert INFRA_NAMESPACE == NAMESPACE  # what the nodes publish is what the policy tracks
    statements = [s for p in resources(raw, "AWS::IAM::Policy") for s in p["Properties"]["PolicyDocument"]["Statement"]]
    (put,) = [s for s in statements if s["Action"] == "cloudwatch:PutMetricData"]
    assert put["Condition"] == {"StringEquals": {"cloudwatch:namespace": NAMESPACE}}


def test_nodes_accept_only_the_nlb_on_port_80(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    _, raw, _ = fleet
    groups = {k: v for k, v in raw["Resources"].items() if v["Type"] == "AWS::EC2::SecurityGroup"}
    nlb_id = next(k for k in groups if "Nlb" in k)
    nlb_rules = groups[nlb_id]["Properties"]["SecurityGroupIngress"]
    assert [(r["FromPort"], r["CidrIp"]) for r in nlb_rules] == [(443, "0.0.0.0/0")]
    node_rules = [r for r in resources(raw, "AWS::EC2::SecurityGroupIngress")]
    assert [(r["Properties"]["FromPort"], r["Properties"]["SourceSecurityGroupId"]) for r in node_rules] == [
        (80, {"Fn::GetAtt": [nlb_id, "GroupId"]})]  # fmt: skip
    node_id = next(k for k in groups if "Node" in k)
    assert "SecurityGroupIngress" not in groups[node_id]["Properties"]  # nothing open to the internet


BAD_CONTEXT = [
    {"mediaNodes": "two"},
    {"mediaNodes": "0"},
    {"mediaNodes": "٣"},  # an Arabic-Indic digit is not a count
    {"mediaNodes": "3", "mediaDomain": ""},
    {"drainGraceSeconds": "9999"},
]


@pytest.mark.parametrize("context", BAD_CONTEXT)
def test_bad_fleet_context_is_one_clear_error(context: dict[str, str]) -> None:
    app = cdk.App(context={**FLEET, "aws:cdk:bundling-stacks": [], **context})
    with pytest.raises(ValueError, match=r"mediaNodes|mediaDomain|drainGraceSeconds") as error:
        VoiceAgentStack(app, "Bad")
    assert "\n" not in str(error.value)


def test_cfn_lint_passes_on_the_fleet_template(fleet: tuple[Template, dict[str, Any], Path]) -> None:
    cfn_lint(fleet[2])
