"""One "server" in a temporary directory: the install layout, real Nginx from Debian, and the project's switch.

The layout is what install.sh leaves on a server (`.env`, `colours/{blue,green}.env`, `releases/<id>` with a
`.venv`, `data/`); the Nginx site, its locations and its main-context settings are the project's own templates,
rendered by `install.sh --render-only` for this box's ports; upgrades and failovers run
`media_node/deploy/switch-colour.sh` itself, with only the service manager and the nginx command line swapped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.standins.processes import free_port

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "media_node" / "deploy"
RELEASE_CONTENT = ("call_state", "media_node", "lambda_api", "all_in_one.py")  # what `python -m all_in_one` imports


SYSTEMCTL_SHIM = """#!/usr/bin/env bash
# systemctl on a drill box: voice-agent@<colour> goes to the drills' service manager; nginx "is active"; the
# rest (daemon-reload, other units) does nothing.
svc=({python} -m tests.drills.servicectl {socket})
words=(); noblock=0
for arg in "$@"; do
  case "$arg" in --no-block) noblock=1 ;; -*) ;; *) words+=("$arg") ;; esac
done
verb="${{words[0]:-}}"; unit="${{words[${{#words[@]}}-1]:-}}"; colour=""
[[ "$unit" =~ ^voice-agent@(blue|green)(\\.service)?$ ]] && colour="${{BASH_REMATCH[1]}}"
case "$verb" in
  show) if [ -n "$colour" ]; then exec "${{svc[@]}}" state "$colour"; fi; echo inactive ;;
  start|enable|disable) if [ -n "$colour" ]; then exec "${{svc[@]}}" "$verb" "$colour"; fi ;;
  stop) if [ -n "$colour" ]; then
          if [ "$noblock" = 1 ]; then exec "${{svc[@]}}" stop-nowait "$colour"; fi
          exec "${{svc[@]}}" stop "$colour"
        fi ;;
  is-active) [ "$unit" = nginx ] && exit 0; exit 3 ;;
  is-enabled) exit 1 ;;
esac
exit 0
"""


def find_nginx() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def free_port_pair() -> int:
    """A port P with P and P + 1 free (blue and green listen side by side, as install.sh lays them out)."""
    for _ in range(50):
        port = free_port()
        if port < 65000:
            try:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no two adjacent free ports on 127.0.0.1")


@dataclass
class DrillBox:
    root: Path
    grace_s: int = 60

    def __post_init__(self) -> None:
        self.app_dir = self.root / "app"
        self.prefix = self.root / "nginx"
        self.logs = self.root / "logs"
        self.http_port = free_port()
        self.blue_port = free_port_pair()
        self.probe_port = free_port()
        self.nginx_proc: asyncio.subprocess.Process | None = None
        self.logs.mkdir(parents=True, exist_ok=True)
        nginx = find_nginx()
        if nginx is None:
            raise RuntimeError("nginx is not installed (make upgrade-drill installs it with apt when run as root)")
        self.nginx = [nginx, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]

    @property
    def stream_url(self) -> str:
        return f"ws://127.0.0.1:{self.http_port}/stream"

    def release(self, name: str) -> Path:
        return self.app_dir / "releases" / name

    def prepare(self, env: dict[str, str], releases: tuple[str, ...] = ("r1", "r2")) -> None:
        """The files install.sh writes: shared .env, one port per colour, releases beside each other."""
        for sub in ("colours", "releases", "data", "bin"):
            (self.app_dir / sub).mkdir(parents=True, exist_ok=True)
        (self.app_dir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        (self.app_dir / "colours" / "blue.env").write_text(f"PORT={self.blue_port}\n")
        (self.app_dir / "colours" / "green.env").write_text(f"PORT={self.blue_port + 1}\n")
        for name in releases:  # each release: the current code, and the project's venv as its .venv
            release = self.release(name)
            release.mkdir()
            for entry in RELEASE_CONTENT:
                (release / entry).symlink_to(ROOT / entry)
            (release / ".venv").symlink_to(Path(sys.prefix))

    async def render_nginx(self, *install_args: str) -> Path:
        """Render the project's templates for this box (install.sh --render-only) and lay them out like Debian;
        returns the main nginx.conf. `install_args` go to install.sh too (e.g. --domain D --tls --cert-dir C)."""
        rendered = self.root / "rendered"
        await self._run(
            "bash", str(DEPLOY / "install.sh"), "--render-only", str(rendered), "--nginx-dir", str(self.prefix),
            "--http-port", str(self.http_port), "--port", str(self.blue_port), "--probe-port", str(self.probe_port),
            "--grace", str(self.grace_s), "--app-dir", str(self.app_dir), *install_args,
        )  # fmt: skip
        self.write_nginx_main()
        shutil.copy(rendered / "voice-agent.conf", self.prefix / "sites-enabled" / "voice-agent.conf")
        shutil.copy(rendered / "voice-agent-app.conf", self.prefix / "snippets" / "voice-agent-app.conf")
        shutil.copy(rendered / "90-voice-agent.conf", self.prefix / "modules-enabled" / "90-voice-agent.conf")
        await self.switch("--init")
        return self.prefix / "nginx.conf"

    def write_nginx_main(self) -> Path:
        """Debian's nginx.conf, in this box's prefix: modules-enabled/ at the top level, sites-enabled/ in http."""
        p = self.prefix
        for sub in ("sites-enabled", "sites-available", "snippets", "modules-enabled", "logs", "temp"):
            (p / sub).mkdir(parents=True, exist_ok=True)
        temp = "".join(f"    {kind}_temp_path {p}/temp/{kind};\n" for kind in ("proxy", "fastcgi", "uwsgi", "scgi"))
        (p / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")  # the drill's nginx runs as whoever runs the drill
            + f"worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\n"
            f"include {p}/modules-enabled/*.conf;\nevents {{\n    worker_connections 4096;\n}}\n"
            f"http {{\n    access_log off;\n    client_body_temp_path {p}/temp/body;\n{temp}"
            f"    include {p}/sites-enabled/*.conf;\n}}\n"
        )
        return p / "nginx.conf"

    async def start_nginx(self) -> None:
        with open(self.logs / "nginx.log", "ab") as log:
            self.nginx_proc = await asyncio.create_subprocess_exec(
                *self.nginx, "-g", "daemon off;", stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        for _ in range(200):
            if (self.prefix / "nginx.pid").exists():
                return
            if self.nginx_proc.returncode is not None:
                raise RuntimeError(f"nginx exited: {(self.prefix / 'logs' / 'error.log').read_text()[-2000:]}")
            await asyncio.sleep(0.05)
        raise RuntimeError("nginx wrote no pid file within 10 s")

    async def stop_nginx(self) -> None:
        if self.nginx_proc is not None and self.nginx_proc.returncode is None:
            self.nginx_proc.send_signal(signal.SIGTERM)  # fast shutdown: the drill is over
            try:
                await asyncio.wait_for(self.nginx_proc.wait(), 10)
            except TimeoutError:
                self.nginx_proc.kill()

    def switch_command(self, services_socket: str) -> list[str]:
        """switch-colour.sh as systemd's units and install.sh run it, pointed at this box."""
        return [
            "bash", str(DEPLOY / "switch-colour.sh"), "--app-dir", str(self.app_dir), "--nginx-dir", str(self.prefix),
            "--probe-port", str(self.probe_port), "--health-timeout", "60", "--nginx-cmd", " ".join(self.nginx),
            "--service-cmd", f"{sys.executable} -m tests.drills.servicectl {services_socket}",
        ]  # fmt: skip

    async def switch(self, *args: str, services_socket: str = "/nonexistent") -> str:
        """Run switch-colour.sh; returns its output, raises with it if the script failed."""
        return await self._run(*self.switch_command(services_socket), *args)

    def host_shims(self, services_socket: str) -> Path:
        """A bin/ directory to put first on PATH so install.sh runs unmodified on this box: `systemctl` sends the
        colour units to the drills' service manager (the rest is a no-op), `nginx` is this box's nginx, and
        `apt-get` / `certbot` do nothing (no packages are installed, no certificate requested)."""
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        shims = {
            "systemctl": SYSTEMCTL_SHIM.format(python=sys.executable, socket=services_socket),
            "nginx": f'#!/bin/sh\nexec {" ".join(self.nginx)} "$@"\n',
            "apt-get": "#!/bin/sh\nexit 0\n",
            "certbot": "#!/bin/sh\necho 'certbot is not run on a drill box' >&2\nexit 1\n",
        }
        for name, text in shims.items():
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        return bin_dir

    def active_colour(self) -> str:
        path = self.app_dir / "colours" / "active"
        return path.read_text().strip() if path.exists() else ""

    async def _run(self, *command: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        with open(self.logs / "switch.log", "a") as log:
            log.write(f"$ {' '.join(command[-2:])}\n{text}\n")
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(command[:2])} {' '.join(command[-2:])} failed ({proc.returncode}):\n{text}")
        return text
