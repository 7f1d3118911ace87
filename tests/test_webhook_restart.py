"""The all-in-one server's webhook outbox survives a real process restart: a `python -m all_in_one` whose first
attempt got a 500 is killed (SIGKILL: no shutdown code runs), the receiver recovers, a new process on the same
SQLite file makes the retry, which is delivered once with the same event_id.

Real processes, the loopback Twilio REST stand-in, a receiver that checks every signature; Twilio's status
callback is a signed request to the real server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from twilio.request_validator import RequestValidator

from call_state.webhook_jobs import event_id_for
from tests.control_helpers import ACCOUNT_SID, API_KEY, AUTH, AUTH_TOKEN
from tests.standins.processes import free_port, wait_for_port
from tests.standins.receiver import Receiver
from tests.standins.twilio_rest import TwilioRestStandIn

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-webhook-secret-not-real-0123"


@contextmanager
def all_in_one(env: dict[str, str], cwd: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    log = cwd / "server.log"
    with log.open("ab") as sink:  # a file, not a pipe nobody drains
        proc = subprocess.Popen([sys.executable, "-m", "all_in_one"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=sink)  # fmt: skip
    problem = wait_for_port(port, proc, 30)
    if problem:
        proc.kill()
        pytest.fail(f"all_in_one {problem}: {log.read_text()[-2000:]}")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_killed_server_retries_after_restart_and_delivers_once(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with TwilioRestStandIn(ACCOUNT_SID, AUTH_TOKEN) as twilio, Receiver(SECRET.encode()) as receiver:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "WEBHOOK_", "API_KEY"))},
               "PORT": str(port), "HOST": "127.0.0.1", "PUBLIC_URL": base, "CALL_STORE": f"sqlite:///{tmp_path}/c.db",
               "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
               "TWILIO_PHONE_NUMBER": "+15550001111", "TWILIO_API_BASE_URL": twilio.base_url, "API_KEY": API_KEY,
               "ALLOWED_DESTINATIONS": "+1", "GEMINI_API_KEY": "test-gemini-key-not-real",
               "WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "NODE_ID": "restart-test"}  # fmt: skip
        receiver.reply("/events", status=500)
        with all_in_one(env, tmp_path, port) as first:
            body = {"destination_number": "+15551230000", "webhook_url": receiver.url("/events")}
            placed = httpx.post(f"{base}/make-call", json=body, headers=AUTH, timeout=10)
            assert placed.status_code == 201, placed.text
            call_id, call_sid = placed.json()["call_id"], placed.json()["call_sid"]
            path, form = f"/status/{call_id}", {"CallSid": call_sid, "CallStatus": "no-answer"}
            signature = RequestValidator(AUTH_TOKEN).compute_signature(base + path, form)
            ended = time.time()
            status = httpx.post(base + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=10)
            assert status.status_code == 204
            (attempt,) = receiver.wait_for(1, "/events", timeout_s=10)
            assert attempt.at - ended < 10  # the first attempt within 10 s of the end
            deadline = time.monotonic() + 10
            while httpx.get(f"{base}/calls/{call_id}", headers=AUTH).json()["webhook"].get("state") != "retrying":
                assert time.monotonic() < deadline, "the failed attempt was never recorded"
                time.sleep(0.05)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        receiver.reply("/events", status=200)
        with all_in_one(env, tmp_path, port):
            second, retry = receiver.wait_for(2, "/events", timeout_s=60)
            assert retry.at - attempt.at <= 60  # the first retry within 60 s, across the restart
            deadline = time.monotonic() + 10
            while (state := httpx.get(f"{base}/calls/{call_id}", headers=AUTH).json()["webhook"])["state"] != (
                "delivered"
            ):  # fmt: skip
                assert time.monotonic() < deadline, state
                time.sleep(0.05)
            time.sleep(2.5)  # a few more worker passes: nothing is sent again
        assert receiver.deliveries("/events") == 2
    assert second is attempt and retry.signature_ok and attempt.signature_ok
    assert retry.json["event_id"] == attempt.json["event_id"] == event_id_for(call_id)
    assert state["attempts"] == 2 and state["last_status"] == 200
