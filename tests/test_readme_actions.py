"""README's "What the agent can do": its curl block works as pasted against a real `python -m all_in_one` (the
loopback Twilio REST stand-in in place of Twilio), and its signature check is the one docs/webhooks.md runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_console_setup import run_readme_block

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
    # The server our requests go to is on loopback here (CRM); its URLs are checked at /make-call, none is called.
    stdout, forms = run_readme_block(tmp_path, "## What the agent can do", dotenv="WEBHOOK_ALLOWED_HOSTS=127.0.0.1\n",
                                     env={"CRM": "http://127.0.0.1:9/agent"})  # fmt: skip
    tools, transfer, voicemail, recorded, waiting, webhook = stdout.strip().splitlines()
    answers = [json.loads(line) for line in (tools, transfer, voicemail, recorded, webhook)]
    assert all(a["status"] == "queued" and a["call_id"].startswith("c_") for a in answers), answers
    assert waiting == "no recording yet: run this again once the call is over"
    assert len(forms) == 5 and all(f["To"] == ["+15551234567"] for f in forms)
    assert forms[2]["MachineDetection"] == ["DetectMessageEnd"] and "Record" not in forms[2]
    assert forms[3]["Record"] == ["true"] and forms[3]["RecordingChannels"] == ["dual"]
    assert not {k for f in (forms[0], forms[1], forms[4]) for k in f if "Machine" in k or k.startswith("Record")}
