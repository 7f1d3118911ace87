"""The media plane, single-node mode (the default, cheapest): one always-on EC2 instance behind Nginx + Certbot,
with an Elastic IP.

A release never replaces the instance: its user data is a constant bootstrap (no asset hash, no domain in it), so
its logical id and properties do not change with the code, and the certificate, the Elastic IP and the disk stay.
New code ships as the S3 asset, and an SSM association (AWS-RunShellScript) whose commands name the asset's hash
runs the blue/green install on the instance: CloudFormation runs an association again whenever its parameters
change, and waits for it to succeed. Self-healing: an EC2 recovery alarm on StatusCheckFailed_System moves the
instance to healthy hardware (same instance id, EIP and disk; the calls on it are cut), and a crashed colour fails
over to the other one (systemd OnFailure=). No SSH (SSM Session Manager), IMDSv2 only, ports 80/443 only.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from infra.media_base import BOOTSTRAP, ROOT, MediaRelease, node_role, public_vpc, root_volume, ubuntu_image
from infra.secrets import AppSecrets

RELEASE_TIMEOUT_S = 1800  # first boot: packages, venv, certificate; an upgrade takes a minute or two


class MediaNodeHost(Construct):
    def __init__(
        self,
        scope: Construct,
        cid: str,
        *,
        table: dynamodb.ITable,
        secrets: AppSecrets,
        environment: dict[str, str],
        instance_type: str = "t3.small",
        domain: str = "",
        email: str = "",
        grace_s: int = 600,
        source_path: Path = ROOT,
    ) -> None:
        super().__init__(scope, cid)
        vpc = public_vpc(self, max_azs=1)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=True, description="Voice agent media node: 80/443"
        )
        self.security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "HTTP: certbot and redirect")
        self.security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS/WSS from Twilio")
        self.role = node_role(self, table, secrets)
        self.release = MediaRelease(self, "Source", source_path=source_path)
        self.release.grant_read(self.role)

        user_data = ec2.UserData.for_linux()
        user_data.add_commands(*BOOTSTRAP)
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            instance_type=ec2.InstanceType(instance_type),
            machine_image=ubuntu_image(),
            security_group=self.security_group,
            role=self.role,
            require_imdsv2=True,
            user_data=user_data,
            user_data_causes_replacement=False,  # the same instance for every release: calls, EIP, certificate stay
            block_devices=root_volume(),
        )
        self.elastic_ip = ec2.CfnEIP(self, "ElasticIp", domain="vpc", instance_id=self.instance.instance_id)

        self.recovery_alarm = cloudwatch.Alarm(
            self,
            "RecoveryAlarm",
            alarm_description="The media node's host failed its system status check: EC2 recovers the instance "
            "onto healthy hardware (same instance id, Elastic IP and disk; the calls on it are lost).",
            metric=cloudwatch.Metric(
                namespace="AWS/EC2",
                metric_name="StatusCheckFailed_System",
                dimensions_map={"InstanceId": self.instance.instance_id},
                statistic="Maximum",
                period=cdk.Duration.minutes(1),
            ),
            evaluation_periods=2,
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.recovery_alarm.add_alarm_action(cw_actions.Ec2Action(cw_actions.Ec2InstanceAction.RECOVER))

        flags = [f"--grace {grace_s}"] + ([f"--domain {domain} --email {email}"] if domain and email else [])
        env = {**environment, **secrets.environment(), "AWS_REGION": cdk.Aws.REGION,
               "CALL_STORE": f"dynamodb://{table.table_name}"}  # fmt: skip
        self.association = ssm.CfnAssociation(
            self,
            "Release",
            name="AWS-RunShellScript",
            association_name=f"{cdk.Aws.STACK_NAME}-media-release",
            targets=[ssm.CfnAssociation.TargetProperty(key="InstanceIds", values=[self.instance.instance_id])],
            parameters={
                "commands": self.release.install_commands(flags, env, after_boot=True),
                "executionTimeout": [str(RELEASE_TIMEOUT_S)],
            },
            wait_for_success_timeout_seconds=RELEASE_TIMEOUT_S,
            max_concurrency="1",
            max_errors="0",
        )
