"""The drills' stand-in for systemd: what `voice-agent@<colour>.service` does on a server, for two local processes.

switch-colour.sh talks to it through `--service-cmd "python -m tests.drills.servicectl SOCKET"`, so the script
runs exactly as in production; only the service manager is swapped. Like the unit file:
- `start` spawns `colours/<colour>/.venv/bin/python -m <module>` in the colour's release directory with `.env`
  then `colours/<colour>.env` as its environment (the later file wins), and returns at once (Type=simple);
- `stop` sends SIGTERM and waits for the drain (SIGKILL after the stop timeout); `stop-nowait` does not wait;
- a colour that dies by a signal or a non-zero exit while not being stopped is "failed", and its OnFailure= runs:
  `switch-colour.sh ... --failover-from <colour>`, retried every few seconds while it fails (Restart=on-failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from call_state.settings import read_dotenv

COLOURS = ("blue", "green")
VERBS = ("start", "stop", "stop-nowait", "state", "enable", "disable")
FAILOVER_ATTEMPTS = 5
FAILOVER_RETRY_S = 2.0
CLEAN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)  # systemd counts these as success


@dataclass
class Colour:
    name: str
    proc: asyncio.subprocess.Process | None = None
    state: str = "inactive"
    stopping: bool = False
    enabled: bool = False
    exits: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, return code)
    exited: asyncio.Event = field(default_factory=asyncio.Event)


class ColourServices:
    """Owns the colour processes and every task around them (one TaskGroup)."""

    def __init__(self, app_dir: Path, module: str, logs: Path, stop_timeout_s: float, failover: list[str]) -> None:
        self.app_dir, self.module, self.logs = app_dir, module, logs
        self.stop_timeout_s = stop_timeout_s
        self.failover_command = failover  # + [colour]
        self.colours = {name: Colour(name) for name in COLOURS}
        self.failovers: list[tuple[str, int]] = []  # (colour, return code) of each OnFailure run
        self.failover_done = asyncio.Event()
        self.socket_path = str(logs / "services.sock")
        self._tasks = asyncio.TaskGroup()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ColourServices:
        await self._tasks.__aenter__()
        self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for colour in self.colours.values():  # what `systemctl stop` does at shutdown, without the long grace
            if colour.proc is not None and colour.proc.returncode is None:
                colour.stopping = True
                colour.proc.send_signal(signal.SIGTERM)
        for colour in self.colours.values():
            if colour.proc is not None:
                try:
                    await asyncio.wait_for(colour.proc.wait(), 15)
                except TimeoutError:
                    colour.proc.kill()
        await self._tasks.__aexit__(None, None, None)

    # --- what systemctl does ----------------------------------------------------------------------------------
    async def start(self, name: str) -> str:
        colour = self.colours[name]
        if colour.proc is not None and colour.proc.returncode is None:
            return "ok"  # already running: systemctl start is a no-op
        release = (self.app_dir / "colours" / name).resolve()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        env |= read_dotenv(self.app_dir / ".env") | read_dotenv(self.app_dir / "colours" / f"{name}.env")
        with open(self.logs / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            colour.proc = await asyncio.create_subprocess_exec(
                str(release / ".venv" / "bin" / "python"), "-m", self.module, cwd=release, env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        colour.state, colour.stopping = "active", False
        colour.exited.clear()
        self._tasks.create_task(self._watch(colour, colour.proc), name=f"watch-{name}")
        return "ok"

    async def stop(self, name: str, wait: bool = True) -> str:
        colour = self.colours[name]
        proc = colour.proc
        if proc is None or proc.returncode is not None:
            return "ok"
        if not colour.stopping:  # a second stop joins the running stop job: no second SIGTERM (that exits now)
            colour.stopping, colour.state = True, "deactivating"
            proc.send_signal(signal.SIGTERM)
        if wait:
            try:
                await asyncio.wait_for(colour.exited.wait(), self.stop_timeout_s)
            except TimeoutError:
                proc.kill()  # TimeoutStopSec ran out
                await colour.exited.wait()
        return "ok"

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or the OOM killer would: not a stop, so OnFailure runs."""
        proc = self.colours[name].proc
        assert proc is not None and proc.returncode is None, f"{name} is not running"
        proc.kill()

    async def wait_exit(self, name: str, timeout_s: float) -> int:
        colour = self.colours[name]
        await asyncio.wait_for(colour.exited.wait(), timeout_s)
        return colour.exits[-1][1]

    def port(self, name: str) -> int:
        return int(read_dotenv(self.app_dir / "colours" / f"{name}.env")["PORT"])

    # --- internals --------------------------------------------------------------------------------------------
    async def _watch(self, colour: Colour, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        colour.exits.append((time.monotonic(), code))
        failed = code != 0 and -code not in CLEAN_SIGNALS
        colour.state = "failed" if failed else "inactive"
        colour.exited.set()
        if failed:  # OnFailure=voice-agent-failover@%i.service
            self._tasks.create_task(self._on_failure(colour.name), name=f"failover-{colour.name}")

    async def _on_failure(self, name: str) -> None:
        self.failover_done.clear()
        for _ in range(FAILOVER_ATTEMPTS):
            with open(self.logs / "failover.log", "ab") as log:
                proc = await asyncio.create_subprocess_exec(
                    *self.failover_command, name, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
                )
            code = await proc.wait()
            self.failovers.append((name, code))
            if code == 0:
                break
            await asyncio.sleep(FAILOVER_RETRY_S)  # Restart=on-failure, RestartSec
        self.failover_done.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode("ascii", "replace").split()
            if len(line) != 2 or line[0] not in VERBS or line[1] not in COLOURS:
                answer = f"error: expected one of {'|'.join(VERBS)} and blue|green, got {' '.join(line)[:60]!r}"
            elif line[0] == "state":
                answer = self.colours[line[1]].state
            elif line[0] in ("enable", "disable"):
                self.colours[line[1]].enabled = line[0] == "enable"
                answer = "ok"
            elif line[0] == "start":
                answer = await self.start(line[1])
            else:
                answer = await self.stop(line[1], wait=line[0] == "stop")
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
