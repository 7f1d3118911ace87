"""`make upgrade-drill`: upgrade one box blue/green under live calls, then SIGKILL a colour mid-call.

    python -m tests.drills.upgrade_drill [--calls N] [--new-calls M] [--kill-calls K]      (defaults 20, 10, 5)

Real parts, nothing leaves the machine: Nginx from Debian with the project's own site rendered for two local
colours (tests/drills/box.py), the current release as two `python -m all_in_one` processes sharing one SQLite file,
the loopback Gemini stand-in, and loopback Twilio callers through Nginx (tests/drills/calls.py). The upgrade is
media_node/deploy/switch-colour.sh, the script install.sh runs; only systemd is stood in for
(tests/drills/colour_services.py). Two lines on stdout (progress goes to stderr):

    upgrade drill: N live calls before, N finished normally, 0 cut; M new calls during the upgrade, M bridged, 0 refused
    kill drill: K live calls on the killed colour (green), K cut; new calls bridged by the other colour (blue) ...

Exit status 0 only if the upgrade cut and refused nothing and the kill drill recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from call_state.sqlite_store import SqliteCallStore
from tests.drills.box import DrillBox
from tests.drills.calls import ACCOUNT_SID, CallDesk, DrillCall
from tests.drills.colour_services import ColourServices
from tests.standins.gemini_server import GeminiStandIn

SECRET = "drill-stream-secret-not-real-0123456789"
AUTH_TOKEN = "drill-auth-token-not-real"
KILL_RECOVERY_LIMIT_S = 60.0


def say(message: str) -> None:
    print(f"  [drill] {message}", file=sys.stderr, flush=True)


def box_env(box: DrillBox, gemini_url: str) -> dict[str, str]:
    """What an operator's .env holds (fake credentials, loopback URLs through this box's Nginx)."""
    return {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_PHONE_NUMBER": "+15550001111",
        "TWILIO_API_BASE_URL": "http://127.0.0.1:9", "GEMINI_API_KEY": "drill-gemini-key-not-real",
        "GEMINI_LIVE_URL": gemini_url, "API_KEY": "drill-api-key-not-real-0123", "STREAM_TOKEN_SECRET": SECRET,
        "PUBLIC_URL": f"http://127.0.0.1:{box.http_port}", "MEDIA_STREAM_URL": box.stream_url,
        "ALLOWED_DESTINATIONS": "+1", "CALL_STORE": f"sqlite:///{box.app_dir / 'data' / 'calls.db'}",
        "HOST": "127.0.0.1", "DRAIN_GRACE_SECONDS": str(box.grace_s), "MAX_CALL_SECONDS": "600",
        "IDLE_TIMEOUT_SECONDS": "300", "MAX_CONCURRENT_CALLS": "200",
    }  # fmt: skip


@dataclass
class UpgradeResult:
    live: int
    finished: int
    new: int
    bridged: int
    old_colour_exit: int | None

    def line(self) -> str:
        return (f"upgrade drill: {self.live} live calls before, {self.finished} finished normally, "
                f"{self.live - self.finished} cut; {self.new} new calls during the upgrade, {self.bridged} bridged, "
                f"{self.new - self.bridged} refused")  # fmt: skip

    @property
    def ok(self) -> bool:
        return self.finished == self.live and self.bridged == self.new and self.old_colour_exit == 0


@dataclass
class KillResult:
    victims: int
    cut: int
    killed: str
    survivor: str
    recovered_after_s: float | None
    refused_meanwhile: int

    def line(self) -> str:
        recovery = (f"new calls bridged by the other colour ({self.survivor}) {self.recovered_after_s:.1f} s after "
                    f"the SIGKILL ({self.refused_meanwhile} attempts refused meanwhile)"
                    if self.recovered_after_s is not None else
                    f"no new call bridged within {KILL_RECOVERY_LIMIT_S:.0f} s")  # fmt: skip
        return f"kill drill: {self.victims} live calls on the killed colour ({self.killed}), {self.cut} cut; {recovery}"

    @property
    def ok(self) -> bool:
        return self.recovered_after_s is not None and self.survivor != self.killed


async def active_calls(port: int) -> int | None:
    """A colour's own count of calls in progress (its /healthz, straight to the process, not through Nginx)."""
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            return int((await client.get(f"http://127.0.0.1:{port}/healthz")).json()["active_calls"])
    except (httpx.HTTPError, ValueError, KeyError):
        return None


async def upgrade_drill(box: DrillBox, desk: CallDesk, services: ColourServices, n: int, m: int) -> UpgradeResult:
    old = box.active_colour()
    say(f"{n} calls on {old}")
    live = [await desk.place(f"live-{i}") for i in range(n)]
    not_bridged = [c.call_id for c in live if c.bridged_at is None]
    if not_bridged:
        raise RuntimeError(f"calls not bridged before the upgrade: {not_bridged} {live[0].refused}")
    say(f"upgrading to r2 with switch-colour.sh while placing {m} new calls")
    upgrade = asyncio.create_task(box.switch("--release", str(box.release("r2")), services_socket=services.socket_path))
    new: list[DrillCall] = []
    while len(new) < m - 1 and not upgrade.done():  # as many as possible around the switch itself
        new.append(await desk.place(f"new-{len(new)}"))
        await asyncio.sleep(0.2)
    say((await upgrade).strip().replace("\n", " | "))
    while len(new) < m:  # the rest while the old colour drains: the upgrade is not over before it exits
        new.append(await desk.place(f"new-{len(new)}"))
    counts = {colour: await active_calls(services.port(colour)) for colour in ("blue", "green")}
    say(f"calls in progress per colour: {counts} ({old} holds the {n} live calls and drains)")
    alive = [await desk.still_bridged(call) for call in live]
    finished = [await desk.hang_up(call) and ok for call, ok in zip(live, alive, strict=True)]
    bridged = [call.bridged_at is not None and await desk.still_bridged(call) for call in new]
    for call in new:
        await desk.hang_up(call)
    exit_code: int | None = None
    try:
        exit_code = await services.wait_exit(old, box.grace_s + 30)
        say(f"{old} drained and exited with {exit_code}")
    except TimeoutError:
        say(f"{old} did not exit after its calls ended")
    for call in new:
        if call.refused:
            say(f"refused: {call.call_id}: {call.refused}")
    return UpgradeResult(n, sum(finished), m, sum(bridged), exit_code)


async def kill_drill(box: DrillBox, desk: CallDesk, services: ColourServices, k: int) -> KillResult:
    killed = box.active_colour()
    victims = [await desk.place(f"victim-{i}") for i in range(k)]
    say(f"{sum(c.bridged_at is not None for c in victims)} calls on {killed}: SIGKILL")
    killed_at = time.monotonic()
    services.kill(killed)
    attempts, recovered = 0, None
    while recovered is None and time.monotonic() - killed_at < KILL_RECOVERY_LIMIT_S:
        attempts += 1
        call = await desk.place(f"after-kill-{attempts}", timeout_s=5)
        if call.bridged_at is not None:
            recovered = call
        else:
            await asyncio.sleep(0.1)
    await asyncio.wait_for(services.failover_done.wait(), 60)
    cut = 0
    for call in victims:
        await call.caller.wait_for(lambda c=call: c.closed, 10)  # type: ignore[misc]
        cut += not await desk.hang_up(call)
    survivor = box.active_colour()
    if recovered is not None:
        assert recovered.bridged_at is not None
        await desk.hang_up(recovered)
        return KillResult(k, cut, killed, survivor, recovered.bridged_at - killed_at, attempts - 1)
    return KillResult(k, cut, killed, survivor, None, attempts)


async def run_drills(calls: int, new_calls: int, kill_calls: int, root: Path) -> tuple[UpgradeResult, KillResult]:
    box = DrillBox(root)
    async with GeminiStandIn(auto_reply=True, reply_ms=300) as gemini:
        box.prepare(box_env(box, gemini.url))
        await box.render_nginx()
        store = SqliteCallStore(str(box.app_dir / "data" / "calls.db"))
        failover = [*box.switch_command(str(box.logs / "services.sock")), "--failover-from"]
        try:
            async with ColourServices(box.app_dir, "all_in_one", box.logs, box.grace_s + 30, failover) as services:
                await box.start_nginx()
                say("first install: release r1")
                await box.switch("--release", str(box.release("r1")), services_socket=services.socket_path)
                desk = CallDesk(store, SECRET, AUTH_TOKEN, gemini, box.stream_url)
                upgrade = await upgrade_drill(box, desk, services, calls, new_calls)
                kill = await kill_drill(box, desk, services, kill_calls)
        finally:
            await box.stop_nginx()
            store.close()
        errors = gemini.all_errors
        if errors:
            say(f"Gemini stand-in saw invalid frames: {errors[:3]}")
    return upgrade, kill


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20, help="live calls before the upgrade (N)")
    parser.add_argument("--new-calls", type=int, default=10, help="calls placed during the upgrade (M)")
    parser.add_argument("--kill-calls", type=int, default=5, help="calls on the colour the kill drill kills")
    parser.add_argument("--keep", action="store_true", help="keep the temporary box (logs) and print its path")
    args = parser.parse_args(argv)
    if args.keep:
        tmp = tempfile.mkdtemp(prefix="upgrade-drill-")
        say(f"box in {tmp}")
        upgrade, kill = asyncio.run(run_drills(args.calls, args.new_calls, args.kill_calls, Path(tmp)))
    else:
        with tempfile.TemporaryDirectory(prefix="upgrade-drill-") as tmp:
            upgrade, kill = asyncio.run(run_drills(args.calls, args.new_calls, args.kill_calls, Path(tmp)))
    print(upgrade.line())
    print(kill.line())
    return 0 if upgrade.ok and kill.ok else 1


if __name__ == "__main__":
    sys.exit(main())
