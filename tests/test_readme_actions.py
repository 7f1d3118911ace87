"""README's "What the agent can do": its curl block works as pasted against a real `python -m all_in_one` (the
loopback Twilio REST stand-in in place of Twilio), and its signature check is the one docs/webhooks.md runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.control_helpers import ACCOUNT_SID, AUTH_TOKEN
from tests.standins.processes import free_port
from tests.standins.twilio_rest import TwilioRestStandIn
from tests.test_console_setup import all_in_one

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## What the agent can do")
    return readme[start : readme.index("\n## ", start + 5)]


def test_the_signature_check_is_the_one_the_docs_run() -> None:
    pattern = r"<!-- verify-example:[^>]*-->\s*```python\n(.*?)```"
    readme, docs = (
        re.search(pattern, section(), re.S),
        re.search(pattern, (ROOT / "docs/webhooks.md").read_text(), re.S),
    )
    assert readme and docs and readme.group(1) == docs.group(1)  # tests/test_outbound_signature.py runs that one


def test_every_feature_curl_works_as_pasted(tmp_path: Path) -> None:
    text = section()
    block = text[text.index("```bash\n") + 8 : text.index("\n```", text.index("```bash\n"))]
    port = free_port()
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio:
        (tmp_path / ".env").write_text(
            f"TWILIO_ACCOUNT_SID={ACCOUNT_SID}\nTWILIO_AUTH_TOKEN={AUTH_TOKEN}\nTWILIO_PHONE_NUMBER=+15550001111\n"
            f"TWILIO_API_BASE_URL={twilio.base_url}\nALLOWED_DESTINATIONS=+1\nPORT={port}\nHOST=127.0.0.1\n"
            f"PUBLIC_URL=http://127.0.0.1:{port}\nGEMINI_API_KEY=test-gemini-key-not-real\n"
            "WEBHOOK_ALLOWED_HOSTS=127.0.0.1\n"  # the receiving server of this test is on loopback
        )
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "API_KEY", "PUBLIC_URL", "PORT"))}
        env = {**clean, "CRM": "http://127.0.0.1:9/agent"}
        with all_in_one(tmp_path, {"PYTHONPATH": str(ROOT)}):
            shell = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shell.returncode == 0, shell.stderr
        forms = twilio.created
    tools, transfer, voicemail, recorded, waiting, webhook = shell.stdout.strip().splitlines()
    answers = [json.loads(line) for line in (tools, transfer, voicemail, recorded, webhook)]
    assert all(a["status"] == "queued" and a["call_id"].startswith("c_") for a in answers), answers
    assert waiting == "no recording yet: run this again once the call is over"
    assert len(forms) == 5 and all(f["To"] == ["+15551234567"] for f in forms)
    assert forms[2]["MachineDetection"] == ["DetectMessageEnd"] and "Record" not in forms[2]
    assert forms[3]["Record"] == ["true"] and forms[3]["RecordingChannels"] == ["dual"]
    assert not {k for f in (forms[0], forms[1], forms[4]) for k in f if "Machine" in k or k.startswith("Record")}
