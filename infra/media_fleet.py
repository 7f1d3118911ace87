"""The media plane, fleet mode (`-c mediaNodes=N`, N >= 2): an Auto Scaling group of media nodes in two AZs behind
a Network Load Balancer that ends TLS on 443 (ACM certificate for mediaDomain) and forwards TCP to Nginx on :80.

How no call is dropped:
- the target group health check is the node's /healthz: a draining or full node answers 503 and gets no new
  streams; connections on an unhealthy target are kept (unhealthy connection termination off), so a full node
  never loses the calls it has. The group itself uses EC2 health checks only: ELB checks would replace a node
  for being busy;
- scale-in, rolling updates and instance refreshes go through the termination lifecycle hook: the NLB first
  stops new connections and waits the deregistration delay (= the drain grace), then the node's fleet agent
  (media_node/fleet.py, told by IMDS) stops both colours, each drains, and completes the hook;
- a release is a new launch template version (its user data names the asset), rolled out one node at a time
  with N nodes in service (MinInstancesInService), each new node signalling once its /healthz answers;
- target tracking keeps the group's average CallUtilization (active calls / capacity, published by every node)
  at the target.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.media_base import BOOTSTRAP, ROOT, MediaRelease, node_role, public_vpc, root_volume, ubuntu_image
from infra.nag import acknowledge
from infra.secrets import AppSecrets

HOOK = "drain"
NAMESPACE = "VoiceAgent"  # media_node.fleet.NAMESPACE
IMDS = "http://169.254.169.254/latest"
ROLLOUT_TIMEOUT = cdk.Duration.minutes(20)  # a new node: packages, venv, first /healthz


class MediaFleet(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        table: dynamodb.ITable,
        secrets: AppSecrets,
        environment: dict[str, str],
        domain: str,
        nodes: int,
        max_nodes: int,
        instance_type: str = "t3.small",
        certificate_arn: str = "",
        calls_per_node: int = 40,
        target_utilization: int = 60,
        grace_s: int = 600,
        source_path: Path = ROOT,
    ) -> None:
        super().__init__(scope, cid)
        stack = cdk.Stack.of(self)
        self.asg_name = f"{cdk.Aws.STACK_NAME}-media"  # fixed: user data, IAM and the metric name it without a cycle
        vpc = public_vpc(self, max_azs=2)
        self.nlb_security_group = ec2.SecurityGroup(
            self, "NlbSecurityGroup", vpc=vpc, allow_all_outbound=True, description="Voice agent NLB: 443"
        )
        self.nlb_security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "WSS from Twilio")
        self.node_security_group = ec2.SecurityGroup(
            self, "NodeSecurityGroup", vpc=vpc, allow_all_outbound=True, description="Voice agent fleet node: 80"
        )
        self.node_security_group.add_ingress_rule(self.nlb_security_group, ec2.Port.tcp(80), "NLB and its checks")
        self.role = role = node_role(self, table, secrets)
        release = MediaRelease(self, "Source", source_path=source_path)
        release.grant_read(role)
        role.add_to_policy(iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"], resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": NAMESPACE}},
        ))  # fmt: skip
        role.add_to_policy(iam.PolicyStatement(
            actions=["autoscaling:CompleteLifecycleAction"],
            resources=[stack.format_arn(service="autoscaling", resource="autoScalingGroup", region=cdk.Aws.REGION,
                                        account=cdk.Aws.ACCOUNT_ID, arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME,
                                        resource_name=f"*:autoScalingGroupName/{self.asg_name}")],
        ))  # fmt: skip
        role.add_to_policy(iam.PolicyStatement(actions=["cloudformation:SignalResource"], resources=[stack.stack_id]))
        acknowledge(role, {
            "AwsSolutions-IAM5[Resource::*]": "cloudwatch:PutMetricData has no resource-level permissions; the "
            "statement is limited to the VoiceAgent namespace by condition.",
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:autoscaling:<AWS::Region>:<AWS::AccountId>:"
            "autoScalingGroup:*:autoScalingGroupName/<AWS::StackName>-media]": "A group's ARN holds a UUID unknown "
            "before it exists: the node may complete lifecycle actions of this stack's media group only.",
        })  # fmt: skip

        user_data = ec2.UserData.for_linux()
        self.launch_template = ec2.LaunchTemplate(
            self, "LaunchTemplate", machine_image=ubuntu_image(), instance_type=ec2.InstanceType(instance_type),
            role=role, security_group=self.node_security_group, user_data=user_data, require_imdsv2=True,
            block_devices=root_volume(),
        )  # fmt: skip
        self.group = autoscaling.AutoScalingGroup(
            self,
            "Nodes",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            launch_template=self.launch_template,
            auto_scaling_group_name=self.asg_name,
            min_capacity=nodes,
            max_capacity=max_nodes,
            signals=autoscaling.Signals.wait_for_min_capacity(timeout=ROLLOUT_TIMEOUT),
            update_policy=autoscaling.UpdatePolicy.rolling_update(
                max_batch_size=1, min_instances_in_service=nodes, pause_time=ROLLOUT_TIMEOUT
            ),
            default_instance_warmup=cdk.Duration.minutes(5),
        )
        acknowledge(self.group, {"AwsSolutions-AS3": "Scaling activity is in the group's activity history and its "
                                 "CloudWatch metrics; an SNS topic would have no subscriber in this app."})  # fmt: skip
        self.hook = self.group.add_lifecycle_hook(
            "Drain",
            lifecycle_hook_name=HOOK,
            lifecycle_transition=autoscaling.LifecycleTransition.INSTANCE_TERMINATING,
            heartbeat_timeout=cdk.Duration.seconds(min(7200, grace_s + 300)),  # the drain, then some margin
            default_result=autoscaling.DefaultResult.CONTINUE,
        )
        group_id = stack.get_logical_id(self.group.node.default_child)  # type: ignore[arg-type]
        env = {**environment, **secrets.environment(), "AWS_REGION": cdk.Aws.REGION,
               "CALL_STORE": f"dynamodb://{table.table_name}", "MAX_CONCURRENT_CALLS": str(calls_per_node)}  # fmt: skip
        user_data.add_commands(
            *BOOTSTRAP,
            "signal() {  # tell CloudFormation this node is (not) serving: the rollout waits for it",
            f'  T=$(curl -sX PUT {IMDS}/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")',
            f'  ID=$(curl -sH "X-aws-ec2-metadata-token: $T" {IMDS}/meta-data/instance-id)',
            f"  aws cloudformation signal-resource --region {cdk.Aws.REGION} --stack-name {cdk.Aws.STACK_NAME} "
            f'--logical-resource-id {group_id} --unique-id "$ID" --status "$1" || true',
            "}",
            "trap 'signal FAILURE' ERR",
            *release.install_commands(
                [f"--grace {grace_s}", f"--fleet-asg {self.asg_name}", f"--fleet-hook {HOOK}"], env, after_boot=False
            ),
            "signal SUCCESS",  # install.sh returns once /healthz answered through Nginx
        )

        if certificate_arn:
            certificate: acm.ICertificate = acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn)
        else:
            certificate = acm.Certificate(
                self, "Certificate", domain_name=domain, validation=acm.CertificateValidation.from_dns()
            )
        self.load_balancer = elbv2.NetworkLoadBalancer(
            self, "Nlb", vpc=vpc, internet_facing=True, security_groups=[self.nlb_security_group],
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC), cross_zone_enabled=True,
        )  # fmt: skip
        acknowledge(self.load_balancer, {"AwsSolutions-ELB2": "NLB access logs need a bucket and have no consumer "
                                         "here; the node that bridges a call logs it with its call id."})  # fmt: skip
        listener = self.load_balancer.add_listener(
            "Wss", port=443, protocol=elbv2.Protocol.TLS, ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
        )  # fmt: skip
        self.target_group = listener.add_targets(
            "Nginx",
            port=80,
            protocol=elbv2.Protocol.TCP,
            targets=[self.group],
            deregistration_delay=cdk.Duration.seconds(min(3600, grace_s)),
            preserve_client_ip=True,
            health_check=elbv2.HealthCheck(
                protocol=elbv2.Protocol.HTTP, path="/healthz", healthy_http_codes="200",
                interval=cdk.Duration.seconds(10), timeout=cdk.Duration.seconds(5), healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
        )  # fmt: skip
        # A full or draining node answers 503: keep its calls, send it no new ones (NLB's default cuts them).
        self.target_group.set_attribute("target_health_state.unhealthy.connection_termination.enabled", "false")
        self.target_group.set_attribute("target_health_state.unhealthy.draining_interval_seconds", "14400")

        utilization = cloudwatch.Metric(
            namespace=NAMESPACE, metric_name="CallUtilization", dimensions_map={"AutoScalingGroupName": self.asg_name},
            statistic="Average", period=cdk.Duration.minutes(1),
        )  # fmt: skip
        self.scaling = self.group.scale_to_track_metric(
            "CallUtilization", metric=utilization, target_value=target_utilization,
            estimated_instance_warmup=cdk.Duration.minutes(5),
        )  # fmt: skip
