"""A real `cdk synth` with the pinned CLI (npm aws-cdk@2) from a clean output directory, the Lambda bundle built for
real (pip, manylinux wheels, no Docker) and imported by a Python 3.12 interpreter."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def cdk_synth(out: Path, *context: str) -> Path:
    """`npx cdk synth` exactly as a user types it: the pinned CLI, only these -c values."""
    cdk = ROOT / "node_modules" / ".bin" / "cdk"
    if not cdk.exists():
        pytest.fail("the pinned CDK CLI is missing: run `make test` (npm ci)")
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CDK_DISABLE_VERSION_CHECK": "1"}
    args = [arg for value in context for arg in ("-c", value)]
    proc = subprocess.run(
        [str(cdk), "synth", "--quiet", "--no-notices", "--output", str(out), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def cloud_assembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "cdk.out"
    return cdk_synth(out, "mediaDomain=media.example.com", "email=ops@example.com")


def find_python312() -> str:
    """A real Python 3.12 (pyenv shims need their own environment, so resolve the interpreter itself)."""
    candidates = [
        shutil.which("python3.12"),
        *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12"))),
        "/usr/bin/python3.12",
        "/usr/local/bin/python3.12",
    ]
    for candidate in filter(None, candidates):
        proc = subprocess.run([candidate, "-c", "import sys; print(sys.executable)"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    pytest.fail("python3.12 is required to smoke-test the Lambda bundle (apt-get install python3.12, or pyenv)")


def test_cli_version_is_pinned_to_v2() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/aws-cdk"]["version"]
    assert version.startswith("2."), version


def test_synth_writes_the_template(cloud_assembly: Path) -> None:
    template = json.loads((cloud_assembly / "VoiceAgent.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::Lambda::Function", "AWS::DynamoDB::Table", "AWS::EC2::Instance", "AWS::ApiGatewayV2::Api",
            "AWS::SSM::Association", "AWS::CloudWatch::Alarm"} <= kinds  # fmt: skip


def test_fleet_mode_synthesizes_with_nothing_else_given(tmp_path: Path) -> None:
    out = cdk_synth(tmp_path / "cdk.out", "mediaNodes=3", "mediaDomain=media.example.com", "email=ops@example.com")
    template = json.loads((out / "VoiceAgent.template.json").read_text())
    kinds = {r["Type"] for r in template["Resources"].values()}
    assert {"AWS::AutoScaling::AutoScalingGroup", "AWS::ElasticLoadBalancingV2::LoadBalancer",
            "AWS::CertificateManager::Certificate", "AWS::AutoScaling::LifecycleHook"} <= kinds  # fmt: skip
    assert "AWS::EC2::Instance" not in kinds


def test_lambda_bundle_imports_under_python312(cloud_assembly: Path) -> None:
    python312 = find_python312()
    # The Lambda bundle is the asset with the wheels next to the code (the media node's asset is the repository).
    bundles = [
        p.parent.parent
        for p in cloud_assembly.glob("asset.*/lambda_api/handler.py")
        if (p.parent.parent / "mangum").is_dir()
    ]
    assert len(bundles) == 1, bundles
    bundle = bundles[0]
    assert (bundle / "call_state" / "dynamo_store.py").exists()
    assert not (bundle / "numpy").exists()  # the control plane does not carry numpy
    assert list(bundle.glob("pydantic_core/*x86_64*.so"))  # manylinux wheels for the Lambda architecture
    proc = subprocess.run(
        [
            python312,
            "-c",
            "import lambda_api.handler as h, lambda_api.webhook_consumer as c; "
            "assert callable(h.handler) and callable(c.handler); print('ok')",
        ],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"]},
    )
    assert proc.stdout.strip() == "ok", proc.stderr
