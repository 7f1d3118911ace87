"""Loopback ports for servers the tests and benchmarks start as child processes (DynamoDB Local, media node)."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A port free on 127.0.0.1 now (the child binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> str | None:
    """None once the child accepts connections on `port`, else why not (it exited, or took too long)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return None
        except OSError:
            if proc.poll() is not None:
                return f"exited at start with code {proc.returncode}"
            time.sleep(0.05)
    return f"did not accept connections within {timeout_s:.0f} s"
