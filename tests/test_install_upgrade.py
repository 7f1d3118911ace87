"""install.sh itself, run as on a server (as root), on a drill box: first install, then an upgrade under a live call.

Nothing of the script is replaced: only the host's commands are shimmed on PATH (tests/drills/box.py `host_shims`):
systemctl goes to the drills' systemd stand-in, apt-get and certbot do nothing, nginx is real Nginx in the box's
prefix. Each release's venv is the project's own (pip finds every pinned requirement installed, PIP_NO_INDEX), so
no package is downloaded. Needs root (the script refuses otherwise), nginx and rsync: `make test` installs them.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from call_state.settings import read_dotenv
from call_state.sqlite_store import SqliteCallStore
from tests.drills.box import DEPLOY, ROOT, DrillBox, find_nginx
from tests.drills.calls import CallDesk
from tests.drills.colour_services import ColourServices
from tests.drills.upgrade_drill import AUTH_TOKEN, SECRET, box_env

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _host() -> None:
    missing = [what for what, ok in (("root", os.geteuid() == 0), ("nginx", find_nginx() is not None),
                                     ("rsync", any(Path(p, "rsync").exists() for p in ("/usr/bin", "/bin"))))
               if not ok]  # fmt: skip
    if missing:
        message = f"install.sh needs {', '.join(missing)} (make test installs the tools when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def install(box: DrillBox, shims: Path, release_id: str, *extra: str, gemini_url: str = "") -> str:
    """sudo bash media_node/deploy/install.sh ..., as the README says, with this box's paths and ports; the first
    install also passes the drill's settings with --env (API_KEY left out: the script generates it)."""
    settings = box_env(box, gemini_url) if gemini_url else {}
    flags = [f"--env={k}={v}" for k, v in settings.items() if k not in ("HOST", "DRAIN_GRACE_SECONDS", "API_KEY")]
    command = [
        "bash", str(DEPLOY / "install.sh"), "--mode", "all-in-one", "--non-interactive", "--release-id", release_id,
        "--app-dir", str(box.app_dir), "--user", "root", "--port", str(box.blue_port),
        "--probe-port", str(box.probe_port), "--http-port", str(box.http_port), "--nginx-dir", str(box.prefix),
        "--systemd-dir", str(box.root / "systemd"), "--acme-root", str(box.root / "acme"), "--grace", str(box.grace_s),
        *[arg for flag in flags for arg in flag.split("=", 1)], *extra,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "PIP_NO_INDEX": "1",
             "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-4000:]
    return text


def prepare_release(box: DrillBox, release_id: str) -> None:
    """What install.sh would create on first use of a release id, minus the download: its venv."""
    release = box.release(release_id)
    release.mkdir(parents=True)
    (release / ".venv").symlink_to(Path(sys.prefix))


async def test_install_then_upgrade_under_a_live_call(tmp_path: Path) -> None:
    from tests.standins.gemini_server import GeminiStandIn

    box = DrillBox(tmp_path, grace_s=30)
    (box.root / "systemd").mkdir()
    stale = box.release("r0")  # an old release nothing points at any more: pruned
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 86400, time.time() - 86400))
    for rid in ("r1", "r2", "r3"):
        prepare_release(box, rid)
    box.write_nginx_main()
    async with GeminiStandIn() as gemini:
        sock = str(box.logs / "services.sock")
        shims = box.host_shims(sock)
        failover = [*box.switch_command(sock), "--failover-from"]
        store = None
        try:
            async with ColourServices(box.app_dir, "all_in_one", box.logs, 60, failover) as services:
                await box.start_nginx()
                first = await install(box, shims, "r1", gemini_url=gemini.url)
                assert "first install: blue serves" in first and "healthy (active: blue)" in first
                env_file = box.app_dir / ".env"
                assert oct(env_file.stat().st_mode & 0o777) == "0o600"
                settings = read_dotenv(env_file)
                assert len(settings["API_KEY"]) == 64 and "PORT" not in settings  # generated; ports are per colour
                assert (box.root / "systemd" / "voice-agent@.service").exists()
                assert (box.root / "systemd" / "voice-agent-failover@.service").exists()

                store = SqliteCallStore(settings["CALL_STORE"].removeprefix("sqlite:///"))
                desk = CallDesk(store, SECRET, AUTH_TOKEN, gemini, box.stream_url)
                call = await desk.place("install-live")
                assert call.bridged_at is not None, call.refused

                with env_file.open("a") as f:
                    f.write("OPERATOR_NOTE=kept across upgrades\n")
                upgrade = await install(box, shims, "r2", "--env", "AGENT_VOICE=Kore")
                assert "starting green on r2" in upgrade and "new calls go to green; blue drains" in upgrade
                assert box.active_colour() == "green"
                after = read_dotenv(env_file)
                assert after["API_KEY"] == settings["API_KEY"] and after["OPERATOR_NOTE"] == "kept across upgrades"
                assert after["AGENT_VOICE"] == "Kore"
                assert services.colours["blue"].state == "deactivating"  # draining the live call
                assert await desk.still_bridged(call) and await desk.hang_up(call)
                assert await services.wait_exit("blue", 30) == 0

                again = await install(box, shims, "r3")
                assert "starting blue on r3" in again and box.active_colour() == "blue"
                releases = sorted(p.name for p in (box.app_dir / "releases").iterdir())
                assert releases == ["r1", "r2", "r3"]  # the newest three; r0 pruned
                assert (box.app_dir / "releases" / "r3" / "media_node" / "deploy" / "install.sh").exists()
                assert not (box.app_dir / "releases" / "r3" / "tests").exists()
                back = await desk.place("after-install")
                assert back.bridged_at is not None and await desk.hang_up(back)
        finally:
            await box.stop_nginx()
            if store is not None:
                store.close()
