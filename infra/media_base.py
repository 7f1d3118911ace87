"""What every media host shares, the single node and the fleet: a VPC of public subnets, the node's IAM role, the
Ubuntu image and disk, and the release: the code as an S3 asset plus the shell lines that install it.

The install lines run the VPS installer (media_node/deploy/install.sh) in media mode, so a release on AWS is the
same blue/green switch as on a VPS: the idle colour starts on the new code, Nginx moves new calls to it, and the
old colour drains. The single node runs them through SSM on every release; a fleet node runs them at first boot.
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
SOURCE_DIR = "/opt/voice-agent-src"
BOOTSTRAP = [  # first boot only, identical for every release: the tools the release commands need
    "set -euxo pipefail",
    "export DEBIAN_FRONTEND=noninteractive",
    "apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get -o DPkg::Lock::Timeout=600 install -y -qq unzip curl",
    "command -v aws || snap install aws-cli --classic",
    "snap list amazon-ssm-agent >/dev/null 2>&1 || snap install amazon-ssm-agent --classic",
]


def public_vpc(scope: Construct, max_azs: int) -> ec2.Vpc:
    """Public subnets only: no NAT gateway to pay for; the nodes accept nothing they were not opened for."""
    return ec2.Vpc(
        scope,
        "Vpc",
        max_azs=max_azs,
        nat_gateways=0,
        subnet_configuration=[ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)],
    )


def node_role(scope: Construct, table: dynamodb.ITable, secrets: AppSecrets) -> iam.Role:
    """Session Manager instead of SSH (and the SSM release runs), the call table, the secrets."""
    role = iam.Role(
        scope,
        "Role",
        assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
        managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("AmazonSSMManagedInstanceCore")],
    )
    table.grant_read_write_data(role)
    secrets.grant_read(role)  # the Twilio token in it is what hangs up calls
    return role


def ubuntu_image() -> ec2.IMachineImage:
    return ec2.MachineImage.from_ssm_parameter(UBUNTU_2404)


def root_volume() -> list[ec2.BlockDevice]:
    return [
        ec2.BlockDevice(
            device_name="/dev/sda1",
            volume=ec2.BlockDeviceVolume.ebs(16, encrypted=True, volume_type=ec2.EbsDeviceVolumeType.GP3),
        )
    ]


class MediaRelease(Construct):
    """The code of one release (an S3 asset named by its content hash) and how to install it on a node."""

    def __init__(self, scope: Construct, cid: str, *, source_path: Path = ROOT) -> None:
        super().__init__(scope, cid)
        self.asset = s3_assets.Asset(self, "Asset", path=str(source_path), exclude=ASSET_EXCLUDE)

    @property
    def release_id(self) -> str:
        return self.asset.asset_hash

    def grant_read(self, role: iam.IGrantable) -> None:
        self.asset.grant_read(role)

    def install_commands(self, flags: list[str], environment: dict[str, str], *, after_boot: bool) -> list[str]:
        """POSIX sh lines (SSM runs them with /bin/sh): fetch this release, install it blue/green, keep one copy.
        `environment` holds ARNs and settings, never a secret value (the node reads secrets at start).
        `after_boot`: run by SSM, so wait for first-boot user data to finish (never inside user data itself)."""
        rid = self.release_id
        env = " ".join(f"--env {key}={value}" for key, value in sorted(environment.items()))
        wait = ["cloud-init status --wait >/dev/null 2>&1 || true"] if after_boot else []
        return [
            "set -eu",
            *wait,
            f"mkdir -p {SOURCE_DIR}",
            f"aws s3 cp s3://{self.asset.s3_bucket_name}/{self.asset.s3_object_key} {SOURCE_DIR}/{rid}.zip "
            f"--region {cdk.Aws.REGION} --only-show-errors",
            f"rm -rf {SOURCE_DIR}/{rid} && mkdir -p {SOURCE_DIR}/{rid}",
            f"unzip -q -o {SOURCE_DIR}/{rid}.zip -d {SOURCE_DIR}/{rid}",
            f"bash {SOURCE_DIR}/{rid}/media_node/deploy/install.sh --mode media --non-interactive --release-id {rid} "
            + " ".join([*flags, env]),
            f"find {SOURCE_DIR} -mindepth 1 -maxdepth 1 ! -name '{rid}*' -exec rm -rf {{}} +",
        ]
