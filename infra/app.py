"""`cdk synth` / `cdk deploy` entry point (cdk.json runs it with the project's venv)."""

from __future__ import annotations

import os

import aws_cdk as cdk

from infra.nag import add_checks
from infra.stack import VoiceAgentStack


def main() -> None:
    app = cdk.App()
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    stack = VoiceAgentStack(app, str(app.node.try_get_context("stackName") or "VoiceAgent"), env=env)
    add_checks(app, stack)
    app.synth()


if __name__ == "__main__":
    main()
