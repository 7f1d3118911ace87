"""The five-minute path: `.env.example` as shipped, `make run` without API_KEY (a kept key, the console line,
the loopback warning), and `make call` (place_call.py) against the real all-in-one process."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from call_state.local_setup import persistent_secret, public_url_warning, read_local_api_key, with_local_api_key
from call_state.settings import Settings, read_dotenv
from tests.standins.processes import free_port
from tests.standins.twilio_rest import TwilioRestStandIn

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT_SID = "AC" + "3" * 32
AUTH_TOKEN = "test-auth-token-not-real"


def test_env_example_starts_as_shipped_and_documents_every_variable() -> None:
    example = ROOT / ".env.example"
    Settings.from_env(read_dotenv(example))  # copied unchanged, it must not stop `make run`
    shell = subprocess.run(["bash", "-euc", f"set -a; . {example}; set +a; echo ok"], capture_output=True, text=True)
    assert shell.stdout.strip() == "ok" and shell.stderr == ""  # README: set -a; . ./.env; set +a
    lines = example.read_text().splitlines()
    documented = set()
    for i, line in enumerate(lines):
        match = re.match(r"^#? ?([A-Z][A-Z0-9_]+)=", line)
        if match:
            assert i > 0 and lines[i - 1].startswith("#") and not re.match(r"^#? ?[A-Z_]+=", lines[i - 1]), line
            documented.add(match.group(1))
    source = (ROOT / "call_state" / "settings.py").read_text()
    parsed = set(re.findall(r'self\.(?:text|integer|url)\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert parsed - {"AWS_DEFAULT_REGION"} <= documented, sorted(parsed - documented)


def test_persistent_secret_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "data" / "api_key"
    key, created = persistent_secret(path)
    assert created and len(key) >= 16 and stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created_again = persistent_secret(path)
    assert (again, created_again) == (key, False)
    path.chmod(0o644)
    assert persistent_secret(path) == (key, False) and stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        persistent_secret(path)


def test_local_api_key_lives_beside_the_sqlite_file(tmp_path: Path) -> None:
    settings = replace(Settings.from_env({}), call_store=f"sqlite:///{tmp_path}/local/calls.db")
    assert read_local_api_key(settings) is None
    filled, line = with_local_api_key(settings)
    assert filled.api_key == (tmp_path / "local" / "api_key").read_text().strip()
    assert read_local_api_key(settings) == filled.api_key
    assert filled.api_key not in line and f"cat {tmp_path}/local/api_key" in line and "/console" in line
    given = replace(settings, api_key="test-api-key-not-real-0123456789")
    assert with_local_api_key(given)[0] is given


TWILIO = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN}


@pytest.mark.parametrize(
    ("env", "warns"),
    [
        (TWILIO, True),
        ({**TWILIO, "PUBLIC_URL": "http://localhost:8080"}, True),
        ({**TWILIO, "PUBLIC_URL": "https://x.example"}, False),
        ({}, False),  # no Twilio: the console works on loopback, nothing to warn about
    ],
)
def test_loopback_public_url_warning(env: dict[str, str], warns: bool) -> None:
    warning = public_url_warning(Settings.from_env(env))
    assert (warning is not None) == warns
    if warning:
        assert "Twilio cannot reach it" in warning and "cloudflared tunnel --url" in warning


@contextmanager
def all_in_one(cwd: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`python -m all_in_one` in `cwd`; yields the process and its stderr lines once it serves (uvicorn's
    "Application startup complete": the console line comes before the server listens)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GEMINI_", "API_KEY", "PUBLIC_URL"))}
    proc = subprocess.Popen([sys.executable, "-m", "all_in_one"], cwd=cwd, env={**clean, **env}, text=True,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("Application startup complete" in line for line in lines):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
        assert any("console: " in line for line in lines), lines
        yield proc, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_make_run_generates_the_key_once_and_never_prints_it(tmp_path: Path) -> None:
    port = str(free_port())
    env = {"PORT": port, "HOST": "127.0.0.1", "PYTHONPATH": str(ROOT), "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
           "TWILIO_AUTH_TOKEN": AUTH_TOKEN}  # fmt: skip
    with all_in_one(tmp_path, env) as (_, first):
        key_file = tmp_path / "data" / "api_key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    console = [line for line in first if "console: " in line]
    assert len(console) == 1 and f"http://127.0.0.1:{port}/console" in console[0] and "cat data/api_key" in console[0]
    assert "generated a new API key" in console[0]
    warnings = [line for line in first if "WARNING" in line and "Twilio cannot reach it" in line]
    assert len(warnings) == 1
    with all_in_one(tmp_path, env) as (_, second):
        assert key_file.read_text().strip() == key
    assert any("kept from an earlier start" in line for line in second)
    assert not any(key in line for line in first + second)


def test_make_call_places_a_call_and_says_where_to_watch(tmp_path: Path) -> None:
    port = free_port()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        (tmp_path / ".env").write_text(
            f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nTWILIO_PHONE_NUMBER=+15550001111\n"
            f"TWILIO_API_BASE_URL={twilio.base_url}\nALLOWED_DESTINATIONS=+1\nPORT={port}\nHOST=127.0.0.1\n"
            "GEMINI_API_KEY=test-gemini-key-not-real\n"  # no call is dialled into a media node that cannot bridge it
        )
        env = {"PYTHONPATH": str(ROOT)}
        with all_in_one(tmp_path, env):
            clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_KEY", "PUBLIC_URL"))}
            run = {**clean, **env, "PROMPT": "You are Ana from ACME clinic.", "GREETING": "Say hello."}
            placed = subprocess.run([sys.executable, str(ROOT / "place_call.py"), "--to", "+15557654321"],
                                    cwd=tmp_path, env=run, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert placed.returncode == 0, placed.stderr
            call_id = re.search(r"^call (c_[0-9a-f]{24}) \(CA[0-9a-f]{32}\): queued$", placed.stdout, re.M)
            assert call_id is not None, placed.stdout
            assert f"watch it live: http://127.0.0.1:{port}/console#/calls/{call_id.group(1)}" in placed.stdout
            assert twilio.dials == 1 and twilio.created[0]["To"] == ["+15557654321"]
            blocked = subprocess.run([sys.executable, str(ROOT / "place_call.py"), "--to", "+445550001111"],
                                     cwd=tmp_path, env=run, capture_output=True, text=True, timeout=60)  # fmt: skip
            assert blocked.returncode == 1 and "ALLOWED_DESTINATIONS" in blocked.stderr and twilio.dials == 1
        bad = subprocess.run([sys.executable, str(ROOT / "place_call.py"), "--to", "5557654321"],
                             cwd=tmp_path, env=run, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert bad.returncode == 2 and "E.164" in bad.stderr
        down = subprocess.run([sys.executable, str(ROOT / "place_call.py"), "--to", "+15557654321"],
                              cwd=tmp_path, env=run, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert down.returncode == 1 and "is `make run` running?" in down.stderr


def run_readme_block(
    tmp_path: Path, heading: str, dotenv: str = "", env: dict[str, str] | None = None
) -> tuple[str, list[dict[str, list[str]]]]:
    """The first bash block after README's `heading`, run as pasted against a real `python -m all_in_one` (the Twilio
    REST stand-in in place of Twilio); its stdout and the forms of the calls it dialled."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(heading) :]
    block = section[section.index("```bash\n") + 8 : section.index("\n```", section.index("```bash\n"))]
    port = free_port()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        (tmp_path / ".env").write_text(
            f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nTWILIO_PHONE_NUMBER=+15550001111\n"
            f"TWILIO_API_BASE_URL={twilio.base_url}\nALLOWED_DESTINATIONS=+1\nPORT={port}\nHOST=127.0.0.1\n"
            f"PUBLIC_URL=http://127.0.0.1:{port}\nGEMINI_API_KEY=test-gemini-key-not-real\n{dotenv}"
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_KEY", "PUBLIC_URL", "PORT"))}
        clean.update(env or {})
        with all_in_one(tmp_path, {"PYTHONPATH": str(ROOT)}):
            shell = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=clean,
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        return shell.stdout, list(twilio.created)


def test_readme_curl_block_works_as_pasted(tmp_path: Path) -> None:
    stdout, dialled = run_readme_block(tmp_path, "## The API with curl")
    assert len(dialled) == 1 and dialled[0]["To"] == ["+15551234567"]
    answer, record, listing = stdout.strip().splitlines()
    call_id = json.loads(answer)["call_id"]
    assert json.loads(record)["call_id"] == call_id and json.loads(record)["status"] == "queued"
    assert [c["call_id"] for c in json.loads(listing)["calls"]] == [call_id]
