"""The media plane: one small always-on EC2 instance (Ubuntu 24.04) behind Nginx + Certbot, with an Elastic IP.

No SSH (SSM Session Manager instead), IMDSv2 only, ports 80/443 only. The code ships as an S3 asset and user data
runs the same installer as the VPS path, in "media node only" mode.
"""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from infra.secrets import AppSecrets

ROOT = Path(__file__).resolve().parent.parent
UBUNTU_2404 = "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
ASSET_EXCLUDE = ["cdk.out", "node_modules", ".venv", "bench", "tests", ".git", "data", ".env", "docs", "*.pyc",
                 "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"]  # fmt: skip


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
    ) -> None:
        super().__init__(scope, cid)
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=1,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)],
        )
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, allow_all_outbound=True, description="Voice agent media node: 80/443"
        )
        self.security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(80), "HTTP: certbot and redirect")
        self.security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS/WSS from Twilio")
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
        )
        table.grant_read_write_data(self.role)
        secrets.grant_read(self.role)  # the Twilio token in it is what hangs up calls
        source = s3_assets.Asset(self, "Source", path=str(ROOT), exclude=ASSET_EXCLUDE)
        source.grant_read(self.role)

        user_data = ec2.UserData.for_linux()
        user_data.add_commands(
            "set -euxo pipefail",
            "export DEBIAN_FRONTEND=noninteractive",
            "apt-get update -qq && apt-get install -y -qq unzip",
            "command -v aws || snap install aws-cli --classic",
        )
        archive = user_data.add_s3_download_command(bucket=source.bucket, bucket_key=source.s3_object_key)
        env = {**environment, **secrets.environment()}  # ARNs only: the node reads the values at start
        env_flags = " ".join(f"--env {key}={value}" for key, value in sorted(env.items()))
        domain_flags = f"--domain {domain} --email {email}" if domain and email else ""
        user_data.add_commands(
            "rm -rf /opt/voice-agent-src && mkdir -p /opt/voice-agent-src",
            f"unzip -q -o {archive} -d /opt/voice-agent-src",
            f"bash /opt/voice-agent-src/media_node/deploy/install.sh --mode media --non-interactive {domain_flags} "
            f"--env AWS_REGION={cdk.Aws.REGION} --env CALL_STORE=dynamodb://{table.table_name} {env_flags}",
        )
        self.instance = ec2.Instance(
            self,
            "Instance",
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC),
            instance_type=ec2.InstanceType(instance_type),
            machine_image=ec2.MachineImage.from_ssm_parameter(UBUNTU_2404),
            security_group=self.security_group,
            role=self.role,
            require_imdsv2=True,
            user_data=user_data,
            user_data_causes_replacement=True,  # a new release or domain replaces the (stateless) node
            block_devices=[
                ec2.BlockDevice(
                    device_name="/dev/sda1",
                    volume=ec2.BlockDeviceVolume.ebs(16, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
                )
            ],
        )
        self.elastic_ip = ec2.CfnEIP(self, "ElasticIp", domain="vpc", instance_id=self.instance.instance_id)
