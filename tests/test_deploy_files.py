"""The VPS / EC2 deploy files: the rendered Nginx site passes `nginx -t` (plain and with TLS), the systemd unit
passes `systemd-analyze verify`, and the scripts pass shellcheck. `make test` installs nginx and shellcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "media_node" / "deploy" / "install.sh"


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


def nginx_check(tmp_path: Path, site: str, tls: tuple[Path, Path] | None = None) -> subprocess.CompletedProcess[str]:
    nginx = tool("nginx", "/usr/sbin/nginx")
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    if tls:  # what certbot --nginx adds, checked with a throwaway self-signed certificate
        cert, key = tls
        site = site.replace("    listen 80;\n    listen [::]:80;", f"    listen 443 ssl;\n    ssl_certificate {cert};\n"
                            f"    ssl_certificate_key {key};")  # fmt: skip
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/tmp;\n{site}\n}}\n"
    )
    return subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)


def test_nginx_site_is_valid_and_proxies_to_loopback(tmp_path: Path) -> None:
    site = (render(tmp_path, "--domain", "voice.example.com", "--port", "8080") / "voice-agent.conf").read_text()
    assert "proxy_pass http://127.0.0.1:8080;" in site and "127.0.0.0" not in site
    assert "proxy_set_header Upgrade $http_upgrade;" in site and "proxy_read_timeout 7200s;" in site
    assert "server_name voice.example.com;" in site
    result = nginx_check(tmp_path, site)
    assert result.returncode == 0, result.stderr


def test_nginx_site_with_tls_is_valid(tmp_path: Path) -> None:
    openssl = tool("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    command = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=voice.example.com"]
    subprocess.run([*command, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    site = (render(tmp_path, "--domain", "voice.example.com") / "voice-agent.conf").read_text()
    result = nginx_check(tmp_path, site, (cert, key))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("mode", "module"), [("all-in-one", "all_in_one"), ("media", "media_node")])
def test_systemd_unit_drains_and_is_hardened(tmp_path: Path, mode: str, module: str) -> None:
    unit = (render(tmp_path, "--mode", mode, "--grace", "600") / "voice-agent.service").read_text()
    assert f"-m {module}" in unit and "KillSignal=SIGTERM" in unit and "TimeoutStopSec=630" in unit
    assert "Restart=on-failure" in unit and "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    analyze = tool("systemd-analyze")
    # verify needs the paths it names to exist: point the unit at a fake app dir with an executable python.
    app = tmp_path / "app"
    (app / ".venv" / "bin").mkdir(parents=True)
    (app / "data").mkdir()
    python = app / ".venv" / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    (app / ".env").write_text("PORT=8080\n")
    path = tmp_path / "voice-agent.service"
    path.write_text(unit.replace("/opt/voice-agent", str(app)).replace("User=voice", "User=root")
                    .replace("Group=voice", "Group=root"))  # fmt: skip
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if str(path) in line or "voice-agent" in line]
    assert result.returncode == 0 or not problems, result.stderr


def test_scripts_pass_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    scripts = [str(INSTALL), str(ROOT / ".ci" / "run")]
    result = subprocess.run([shellcheck, "-S", "warning", *scripts], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_installer_rejects_bad_flags() -> None:
    for args in (["--mode", "nope"], ["--port", "eighty"], ["--bogus"]):
        result = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True)
        assert result.returncode == 2, args
