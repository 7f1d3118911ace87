"""The node under test as a child process (ours: `python -m media_node`; the baseline: bench/baseline_bridge.py),
optionally pinned to one core, and what the benches read off it (CPU seconds, RSS)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from call_state.record import AgentSettings, CallRecord, Direction
from tests.standins.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-stream-secret-not-real-0123456789"


def bench_call(call_id: str, now: float) -> CallRecord:
    agent = AgentSettings("bench", "Greet.", "Puck", "en-US")
    return CallRecord(call_id, Direction.OUTBOUND, "+15550000000", "+15550000001", agent, now, int(now) + 600)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def start_node(
    kind: str, gemini_url: str, db: str, *, core: int | None = None, max_calls: int = 1000
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the node on a free loopback port (pinned to `core` when given); returns it and its /stream URL."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "GEMINI_LIVE_URL": gemini_url,
           "GEMINI_API_KEY": "bench-key-not-real", "STREAM_TOKEN_SECRET": SECRET, "CALL_STORE": f"sqlite:///{db}",
           "MAX_CONCURRENT_CALLS": str(max_calls), "IDLE_TIMEOUT_SECONDS": "300", "DRAIN_GRACE_SECONDS": "3",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    for key in ("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID", "PUBLIC_URL", "MEDIA_STREAM_URL"):
        env.pop(key, None)
    if kind == "ours":
        cmd = [sys.executable, "-m", "media_node"]
    else:
        cmd = [sys.executable, str(ROOT / "bench" / "baseline_bridge.py"), "--port", str(port), "--gemini-url",
               gemini_url]  # fmt: skip
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    with open(Path(tempfile.gettempdir()) / f"bench-{kind}-node.log", "ab") as log:  # the child keeps its own fd
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=ROOT, preexec_fn=pin)
    problem = await asyncio.to_thread(wait_for_port, port, proc, 20)
    if problem:
        proc.kill()
        raise RuntimeError(f"{kind} node {problem}")
    return proc, f"ws://127.0.0.1:{port}/stream"


async def stop_node(proc: subprocess.Popen[bytes]) -> None:
    # Wait off the loop: the Gemini stand-in may live on this loop and must answer the node's closing handshakes.
    proc.terminate()
    try:
        await asyncio.to_thread(proc.wait, 15)
    except subprocess.TimeoutExpired:
        proc.kill()
