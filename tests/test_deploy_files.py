"""The VPS / EC2 deploy files: the rendered Nginx site passes `nginx -t` (plain and with TLS) laid out as on Debian,
the systemd units pass `systemd-analyze verify`, the scripts pass shellcheck and refuse bad flags. `make test`
installs nginx, shellcheck and systemd-analyze; in CI a missing tool fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.drills.box import DrillBox

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "media_node" / "deploy"
INSTALL = DEPLOY / "install.sh"
SWITCH = DEPLOY / "switch-colour.sh"


def tool(name: str, *extra: str) -> str:
    found = shutil.which(name) or next((p for p in extra if Path(p).exists()), None)
    if found is None:
        message = f"{name} is not installed (make test installs it with apt when run as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def render(tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "rendered"
    subprocess.run(["bash", str(INSTALL), "--render-only", str(out), *args], check=True, capture_output=True)
    return out


def nginx_test(tmp_path: Path, *install_args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """Render for a box and run `nginx -t` on the whole configuration (site, locations, upstream, main)."""
    tool("nginx", "/usr/sbin/nginx")
    box = DrillBox(tmp_path)
    box.prepare({"CALL_STORE": "sqlite:///x.db"}, releases=())
    asyncio.run(box.render_nginx(*install_args))
    return box.prefix, subprocess.run([*box.nginx, "-t"], capture_output=True, text=True)


def test_nginx_site_is_valid_and_proxies_to_the_active_colour(tmp_path: Path) -> None:
    prefix, result = nginx_test(tmp_path, "--domain", "voice.example.com")
    assert result.returncode == 0, result.stderr
    site = (prefix / "sites-enabled" / "voice-agent.conf").read_text()
    app = (prefix / "snippets" / "voice-agent-app.conf").read_text()
    upstream = (prefix / "voice-agent-upstream.conf").read_text()
    assert "server_name voice.example.com;" in site and "listen 443" not in site and "\n#tls:" not in site
    assert f"include {prefix}/snippets/voice-agent-app.conf;" in site  # plain HTTP serves the app itself
    assert "location ^~ /.well-known/acme-challenge/" in site
    assert "location ~ ^/(stream|browser-stream)$" in app and "proxy_pass http://voice_agent;" in app
    assert "proxy_set_header Upgrade $http_upgrade;" in app and "proxy_read_timeout 7200s;" in app
    assert "127.0.0.0" not in app + site
    blue = (tmp_path / "app" / "colours" / "blue.env").read_text().strip().removeprefix("PORT=")
    assert f"server 127.0.0.1:{blue};" in upstream and 'default "blue";' in upstream  # first install: blue


def test_nginx_site_with_tls_is_valid_and_redirects_plain_http(tmp_path: Path) -> None:
    openssl = tool("openssl")
    certs = tmp_path / "live"
    certs.mkdir()
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=voice.example.com"]
    subprocess.run([*command, "-keyout", str(certs / "privkey.pem"), "-out", str(certs / "fullchain.pem")],
                   check=True, capture_output=True)  # fmt: skip
    prefix, result = nginx_test(tmp_path / "box", "--domain", "voice.example.com", "--tls", "--cert-dir", str(certs))
    assert result.returncode == 0, result.stderr
    site = (prefix / "sites-enabled" / "voice-agent.conf").read_text()
    plain, tls, probe = site.split("\nserver {")[1:4]
    assert "return 301 https://$host$request_uri;" in plain and "voice-agent-app.conf" not in plain
    assert "acme-challenge" in plain  # renewals keep working over HTTP
    assert "listen 443 ssl;" in tls and f"ssl_certificate {certs}/fullchain.pem;" in tls
    assert "voice-agent-app.conf" in tls and "listen 127.0.0.1:" in probe


@pytest.mark.parametrize(("args", "timeout"), [((), 1860), (("--max-call-seconds", "3600"), 3660),
                                               (("--grace", "7200"), 7260)])  # fmt: skip
def test_worker_shutdown_timeout_outlasts_any_call_and_the_drain(tmp_path: Path, args: tuple[str, ...],
                                                                 timeout: int) -> None:  # fmt: skip
    main = (render(tmp_path, *args) / "90-voice-agent.conf").read_text()
    assert f"worker_shutdown_timeout {timeout}s;" in main  # a reload (upgrade, renewal) never cuts a call


def verify(tmp_path: Path, units: dict[str, str], instance: str) -> None:
    analyze = tool("systemd-analyze")
    # verify needs the paths the units name to exist: point them at a fake app dir with executables.
    app = tmp_path / "app"
    for path in ("colours/blue/.venv/bin/python", "bin/switch-colour.sh", "current/.venv/bin/python"):
        (app / path).parent.mkdir(parents=True, exist_ok=True)
        (app / path).write_text("#!/bin/sh\n")
        (app / path).chmod(0o755)
    (app / "data").mkdir(exist_ok=True)
    (app / ".env").write_text("CALL_STORE=sqlite:///x.db\n")
    (app / "colours" / "blue.env").write_text("PORT=8081\n")
    units_dir = tmp_path / "units"
    units_dir.mkdir(exist_ok=True)
    for name, text in units.items():
        (units_dir / name).write_text(text.replace("/opt/voice-agent", str(app)).replace("User=voice", "User=root")
                                      .replace("Group=voice", "Group=root"))  # fmt: skip
    result = subprocess.run([analyze, "verify", str(units_dir / instance)], capture_output=True, text=True,
                            cwd=units_dir)  # fmt: skip
    problems = [line for line in result.stderr.splitlines() if "voice-agent" in line]
    assert not problems, result.stderr  # warnings about our units included


@pytest.mark.parametrize(("mode", "module"), [("all-in-one", "all_in_one"), ("media", "media_node")])
def test_colour_unit_drains_fails_over_and_is_hardened(tmp_path: Path, mode: str, module: str) -> None:
    rendered = render(tmp_path, "--mode", mode, "--grace", "600")
    unit = (rendered / "voice-agent@.service").read_text()
    failover = (rendered / "voice-agent-failover@.service").read_text()
    assert f"ExecStart=/opt/voice-agent/colours/%i/.venv/bin/python -m {module}" in unit
    assert "WorkingDirectory=/opt/voice-agent/colours/%i" in unit
    assert "EnvironmentFile=/opt/voice-agent/.env\nEnvironmentFile=/opt/voice-agent/colours/%i.env" in unit
    assert "KillSignal=SIGTERM" in unit and "TimeoutStopSec=630" in unit
    assert "OnFailure=voice-agent-failover@%i.service" in unit and "Restart=no" in unit
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    assert "--failover-from %i" in failover and "Restart=on-failure" in failover and "Type=oneshot" in failover
    verify(tmp_path, {"voice-agent@.service": unit, "voice-agent-failover@.service": failover},
           "voice-agent@blue.service")  # fmt: skip


def test_fleet_unit_runs_the_fleet_agent(tmp_path: Path) -> None:
    rendered = render(tmp_path, "--mode", "media", "--fleet-asg", "Voice-media", "--port", "9001")
    unit = (rendered / "voice-agent-fleet.service").read_text()
    assert "-m media_node.fleet --asg Voice-media --hook drain --ports 9001,9002 --capacity 100" in unit
    assert "Restart=on-failure" in unit  # a clean exit means the hook is completed: the instance is going away
    verify(tmp_path, {"voice-agent-fleet.service": unit}, "voice-agent-fleet.service")


def test_scripts_pass_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    scripts = [str(INSTALL), str(SWITCH), str(ROOT / ".ci" / "run")]
    result = subprocess.run([shellcheck, "-S", "warning", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("script", "args"),
    [
        (INSTALL, ["--mode", "nope"]),
        (INSTALL, ["--port", "eighty"]),
        (INSTALL, ["--port", "٨٠"]),  # Arabic-Indic digits are not a port
        (INSTALL, ["--grace", "-1"]),
        (INSTALL, ["--release-id", "../../etc"]),
        (INSTALL, ["--fleet-asg", "a;reboot"]),
        (INSTALL, ["--bogus"]),
        (SWITCH, []),
        (SWITCH, ["--failover-from", "purple"]),
        (SWITCH, ["--failover-from", "blue;id"]),
        (SWITCH, ["--status", "--probe-port", "x"]),
        (SWITCH, ["--bogus"]),
    ],
)
def test_scripts_reject_bad_flags(script: Path, args: list[str]) -> None:
    result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True)
    assert result.returncode == 2, (args, result.stdout, result.stderr)


@pytest.mark.parametrize("recorded", ["purple\n", "blue; reboot\n", "\u0431lue\n"])  # the last: Cyrillic b
def test_switch_refuses_a_tampered_active_colour(tmp_path: Path, recorded: str) -> None:
    (tmp_path / "colours").mkdir()
    (tmp_path / "colours" / "active").write_text(recorded, encoding="utf-8")
    (tmp_path / "release" / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "release" / ".venv" / "bin" / "python").symlink_to("/bin/true")
    calls = tmp_path / "service-calls"
    service = tmp_path / "service.sh"  # records every service manager call
    service.write_text(f'#!/bin/sh\necho "$1 $2" >> {calls}\necho inactive\n')
    service.chmod(0o755)
    result = subprocess.run(["bash", str(SWITCH), "--app-dir", str(tmp_path), "--nginx-dir", str(tmp_path),
                             "--service-cmd", str(service), "--release", str(tmp_path / "release")],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 1 and "names neither blue nor green" in result.stderr
    assert not calls.exists()  # nothing was started or stopped
