"""Build the Lambda bundle locally with pip (manylinux wheels for the Lambda runtime), no Docker."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii

PLATFORMS = {"x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64"],
             "arm64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64"]}  # fmt: skip


@jsii.implements(cdk.ILocalBundling)
class LocalPipBundling:
    def __init__(self, root: Path, packages: list[str], requirements: Path, architecture: str) -> None:
        self.root, self.packages, self.requirements, self.architecture = root, packages, requirements, architecture

    def try_bundle(self, output_dir: str, *, image: Any = None, **_options: Any) -> bool:
        platforms = [arg for p in PLATFORMS[self.architecture] for arg in ("--platform", p)]
        subprocess.run(  # noqa: S603 - our own pip, our own arguments
            [sys.executable, "-m", "pip", "install", "-q", "-r", str(self.requirements), "-t", output_dir,
             *platforms, "--implementation", "cp", "--python-version", "3.12", "--only-binary=:all:",
             "--no-compile", "--disable-pip-version-check"],
            check=True,
        )  # fmt: skip
        for package in self.packages:
            shutil.copytree(
                self.root / package,
                Path(output_dir) / package,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "requirements*.txt"),
                dirs_exist_ok=True,
            )
        return True
