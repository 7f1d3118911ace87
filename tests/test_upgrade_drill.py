"""The upgrade and kill drills (`make upgrade-drill`) as tests with small N, and the switch's other paths: a
broken release never takes a call, an upgrade waits for the previous drain, rollback is the same switch back.

Real Nginx from Debian (make test installs it when root; in CI a missing nginx fails), two real colour processes,
the loopback stand-ins; media_node/deploy/switch-colour.sh runs as in production (tests/drills/box.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from call_state.sqlite_store import SqliteCallStore
from tests.drills.box import ROOT, DrillBox, find_nginx
from tests.drills.calls import CallDesk
from tests.drills.colour_services import ColourServices
from tests.drills.upgrade_drill import AUTH_TOKEN, SECRET, box_env
from tests.standins.gemini_server import GeminiStandIn

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _nginx() -> None:
    if find_nginx() is None:
        message = "nginx is not installed (make test installs it with apt when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_upgrade_drill_cuts_and_refuses_nothing_and_kill_drill_recovers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.drills.upgrade_drill", "--calls", "4", "--new-calls", "3", "--kill-calls", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    upgrade, kill = proc.stdout.strip().splitlines()
    assert upgrade == ("upgrade drill: 4 live calls before, 4 finished normally, 0 cut; "
                       "3 new calls during the upgrade, 3 bridged, 0 refused")  # fmt: skip
    found = re.fullmatch(
        r"kill drill: 2 live calls on the killed colour \(green\), 2 cut; new calls bridged by the other colour "
        r"\(blue\) ([0-9.]+) s after the SIGKILL \(([0-9]+) attempts refused meanwhile\)",
        kill,
    )
    assert found, kill
    assert float(found.group(1)) < 30
    assert "switch: starting green on r2" in proc.stderr and "blue drained and exited with 0" in proc.stderr


def broken_release(box: DrillBox) -> Path:
    """A release whose server dies at start (a bad dependency, a syntax error): it must never take a call."""
    release = box.release("broken")
    release.mkdir()
    (release / "all_in_one.py").write_text("raise SystemExit('this release is broken')\n")
    (release / ".venv").symlink_to(Path(sys.prefix))
    return release


async def test_broken_release_upgrade_waits_for_drain_and_rollback(tmp_path: Path) -> None:
    box = DrillBox(tmp_path, grace_s=30)
    async with GeminiStandIn() as gemini:
        box.prepare(box_env(box, gemini.url))
        broken = broken_release(box)
        await box.render_nginx()
        store = SqliteCallStore(str(box.app_dir / "data" / "calls.db"))
        failover = [*box.switch_command(str(box.logs / "services.sock")), "--failover-from"]
        sock = str(box.logs / "services.sock")
        try:
            async with ColourServices(box.app_dir, "all_in_one", box.logs, 60, failover) as services:
                await box.start_nginx()
                await box.switch("--release", str(box.release("r1")), services_socket=sock)
                desk = CallDesk(store, SECRET, AUTH_TOKEN, gemini, box.stream_url)
                first = await desk.place("first")
                assert first.bridged_at is not None, first.refused

                with pytest.raises(RuntimeError, match="green did not answer /healthz"):
                    await box.switch("--release", str(broken), services_socket=sock)
                assert box.active_colour() == "blue"
                assert await desk.still_bridged(first)  # the call in progress never noticed
                during = await desk.place("after-broken")
                assert during.bridged_at is not None, during.refused
                await asyncio.wait_for(services.failover_done.wait(), 30)
                assert services.failovers == [("green", 0)]  # green was idle: its failure moved nothing

                await box.switch("--release", str(box.release("r2")), services_socket=sock)
                colours = box.app_dir / "colours"
                assert box.active_colour() == "green"
                assert (colours / "green").resolve() == box.release("r2").resolve()
                assert (colours / "previous").resolve() == box.release("r1").resolve()
                assert (box.app_dir / "current").resolve() == box.release("r2").resolve()
                assert services.colours["green"].enabled and not services.colours["blue"].enabled

                # Rolling back while blue still drains: the switch waits for blue's calls to end first.
                rollback = asyncio.create_task(box.switch("--rollback", services_socket=sock))
                await asyncio.sleep(1.5)
                assert not rollback.done() and services.colours["blue"].state == "deactivating"
                assert await desk.still_bridged(first) and await desk.still_bridged(during)
                assert await desk.hang_up(first) and await desk.hang_up(during)
                output = await asyncio.wait_for(rollback, 60)
                assert "rolling back to r1" in output and "waiting for it to exit" in output
                assert services.colours["blue"].exits[-1][1] == 0  # drained, not killed
                assert box.active_colour() == "blue"
                assert (colours / "blue").resolve() == box.release("r1").resolve()
                assert (colours / "previous").resolve() == box.release("r2").resolve()
                back = await desk.place("after-rollback")
                assert back.bridged_at is not None, back.refused
                assert await desk.hang_up(back)
                status = await box.switch("--status", services_socket=sock)
                assert status.splitlines()[0] == "active: blue"
        finally:
            await box.stop_nginx()
            store.close()
        assert gemini.all_errors == []
