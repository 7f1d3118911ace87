"""`POST /make-call` with the agent's actions: what is refused (422, 403, 503) before anything is dialled, what is
stored, and what the dial asks Twilio for (answering machine detection, recording). `/incoming` takes the
environment's defaults. Over ASGI against the loopback Twilio REST stand-in, on SQLite (the store side of these is
contract-tested on every backend).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from call_state.outbound import OutboundClient
from call_state.outbound_policy import OutboundPolicy
from call_state.outbound_signature import WebhookSigner
from call_state.settings import Settings
from call_state.store import CallStore
from lambda_api.webhooks import inbound_call_id
from tests.control_helpers import AUTH, control_api, make_call, signed
from tests.standins.receiver import FakeResolver
from tests.standins.twilio_rest import TwilioRestStandIn

WEBHOOK_SECRET = "test-webhook-secret-not-real-0123"
PUBLIC_HOSTS = FakeResolver({"crm.example.com": ["93.184.216.34"], "rebind.example.com": ["10.1.2.3"],
                             "metadata.example.com": ["169.254.169.254"]})  # fmt: skip
TOOL = {"name": "book_slot", "description": "Book an appointment slot",
        "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
        "url": "https://crm.example.com/agent/book", "timeout_s": 8}  # fmt: skip
ACTIONS = {"tools": [TOOL], "transfer_to": "+15557654321",
           "voicemail": {"action": "leave_message", "message": "Hi, this is ACME clinic about your appointment."},
           "record": True, "webhook_url": "https://crm.example.com/agent/events"}  # fmt: skip


@pytest.fixture
async def api(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    client = OutboundClient(WebhookSigner(WEBHOOK_SECRET.encode()), OutboundPolicy(), resolver=PUBLIC_HOSTS)
    async with control_api(twilio, sqlite_store, outbound=client, webhook_secret=WEBHOOK_SECRET) as api:
        yield api


def call(**fields: Any) -> dict[str, Any]:
    return {"destination_number": "+15551230000", **fields}


async def test_the_actions_are_stored_and_shown(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    r = await make_call(api, call(**ACTIONS))
    assert r.status_code == 201, r.text
    record = (await api.get(f"/calls/{r.json()['call_id']}", headers=AUTH)).json()
    assert record["actions"] == {**ACTIONS, "tools": [TOOL]}
    for field, empty in (("tool_calls", []), ("transferred_to", ""), ("answered_by", ""), ("recording", None),
                         ("webhook", {})):  # fmt: skip
        assert record[field] == empty
    assert twilio.dials == 1


async def test_the_dial_asks_for_amd_and_the_recording(api: httpx.AsyncClient, twilio: TwilioRestStandIn) -> None:
    r = await make_call(api, call(voicemail={"action": "hang_up"}, record=True))
    call_id, form = r.json()["call_id"], twilio.created[-1]
    base = "https://voice.example.com"
    assert {k: v for k, v in form.items() if "Amd" in k or "Machine" in k} == {
        "MachineDetection": ["DetectMessageEnd"], "AsyncAmd": ["true"],
        "AsyncAmdStatusCallback": [f"{base}/amd/{call_id}"], "AsyncAmdStatusCallbackMethod": ["POST"]}  # fmt: skip
    assert {k: v for k, v in form.items() if k.startswith("Record")} == {
        "Record": ["true"], "RecordingChannels": ["dual"], "RecordingStatusCallback": [f"{base}/recording/{call_id}"],
        "RecordingStatusCallbackMethod": ["POST"], "RecordingStatusCallbackEvent": ["completed"]}  # fmt: skip
    quick = await make_call(api, call(machine_detection=True))  # the older field: AMD only to record answered_by
    assert twilio.created[-1]["MachineDetection"] == ["Enable"]
    assert twilio.created[-1]["AsyncAmdStatusCallback"] == [f"{base}/amd/{quick.json()['call_id']}"]
    await make_call(api)
    plain = twilio.created[-1]
    assert not {k for k in plain if "Machine" in k or "Amd" in k or k.startswith("Record")}


@pytest.mark.parametrize(
    ("field", "url", "reason"),
    [
        ("webhook_url", "https://10.0.0.5/events", "private"),
        ("webhook_url", "https://169.254.169.254/latest/meta-data/", "link-local"),
        ("webhook_url", "https://metadata.example.com/x", "link-local"),  # a name that resolves to the metadata IP
        ("webhook_url", "https://rebind.example.com/x", "private"),
        ("webhook_url", "http://crm.example.com/events", "http:// is only allowed for hosts in WEBHOOK_ALLOWED_HOSTS"),
        ("webhook_url", "https://127.0.0.1:8080/", "loopback"),
        ("tools.0.url", "https://[::ffff:10.0.0.1]/book", "private"),
        ("tools.0.url", "https://2130706433/book", ""),
        ("tools.0.url", "https://nowhere.example.com/book", "could not be resolved"),
    ],
)
async def test_refused_destinations_are_422_and_never_dial(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, field: str, url: str, reason: str
) -> None:
    body = call(webhook_url=url) if field == "webhook_url" else call(tools=[{**TOOL, "url": url}])
    r = await make_call(api, body, **{"Idempotency-Key": f"k-{field}-{len(url)}"})
    error = r.json()["error"]
    assert r.status_code == 422 and error["code"] == "url_not_allowed" and error["field"] == field, r.text
    assert error["message"].startswith(f"{field}: ") and reason in error["message"]
    assert twilio.dials == 0 and (await api.get("/calls", headers=AUTH)).json()["calls"] == []
    fixed = await make_call(api, call(), **{"Idempotency-Key": f"k-{field}-{len(url)}"})
    assert fixed.status_code == 201 and twilio.dials == 1  # nothing was dialled, so the key was released


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"tools": [{**TOOL, "name": "end_call"}]}, "tools.0.name", "agent's own tool"),
        ({"tools": [{**TOOL, "name": "9lives"}]}, "tools.0.name", "must match"),
        ({"tools": [TOOL] * 17}, "tools", "at most 16"),
        ({"tools": [TOOL, TOOL]}, "tools", "unique"),
        ({"tools": [{**TOOL, "timeout_s": 600}]}, "tools.0.timeout_s", "at most 30"),
        ({"tools": [{**TOOL, "secret": 1}]}, "tools.0", "unknown field"),
        ({"transfer_to": "5557654321"}, "transfer_to", "E.164"),
        ({"voicemail": {"action": "sing"}}, "voicemail.action", "leave_message or hang_up"),
        ({"voicemail": {"action": "leave_message"}}, "voicemail.message", "required"),
        ({"webhook_url": 42}, "webhook_url", "string"),
    ],
)
async def test_bad_actions_are_422_naming_the_field(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn, fields: dict[str, Any], field: str, says: str
) -> None:
    r = await make_call(api, call(**fields))
    error = r.json()["error"]
    assert r.status_code == 422 and error["field"] == field and says in error["message"], r.text
    assert twilio.dials == 0


async def test_record_must_be_a_boolean(api: httpx.AsyncClient) -> None:
    for value in ("true", 1, None):
        r = await make_call(api, call(record=value))
        assert r.status_code == 422 and r.json()["error"]["field"] == "record"


async def test_transfer_to_outside_allowed_destinations_is_403(
    api: httpx.AsyncClient, twilio: TwilioRestStandIn
) -> None:
    r = await make_call(api, call(transfer_to="+445550001111"))  # ALLOWED_DESTINATIONS is +1,+58
    assert r.status_code == 403 and r.json()["error"]["code"] == "transfer_not_allowed"
    assert (await make_call(api, call(transfer_to="+584121234567"))).status_code == 201
    assert twilio.dials == 1


async def test_tools_and_webhooks_need_the_webhook_secret(twilio: TwilioRestStandIn, sqlite_store: CallStore) -> None:
    async with control_api(twilio, sqlite_store, webhook_secret="") as api:
        for fields in ({"webhook_url": "https://crm.example.com/e"}, {"tools": [TOOL]}):
            r = await make_call(api, call(**fields))
            assert r.status_code == 503 and "WEBHOOK_SECRET" in r.json()["error"]["message"]
            assert r.headers["Retry-After"] == "60"
        ok = await make_call(api, call(transfer_to="+15557654321", record=True))  # nothing to sign: no secret needed
        assert ok.status_code == 201
    assert twilio.dials == 1


async def test_a_large_but_valid_set_of_tools_fits(api: httpx.AsyncClient) -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 300}
                                               for i in range(20)}}  # fmt: skip
    tools = [{**TOOL, "name": f"tool_{i}", "description": "x" * 1000, "parameters": schema} for i in range(16)]
    r = await make_call(api, call(tools=tools))
    assert r.status_code == 201, r.text[:300]
    record = (await api.get(f"/calls/{r.json()['call_id']}", headers=AUTH)).json()
    assert [t["name"] for t in record["actions"]["tools"]] == [f"tool_{i}" for i in range(16)]


async def test_incoming_calls_take_the_environment_defaults(
    twilio: TwilioRestStandIn, sqlite_store: CallStore, tmp_path: Path
) -> None:
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps({"tools": [TOOL]}))
    env = {"AGENT_TOOLS_FILE": str(tools_file), "AGENT_TRANSFER_TO": "+15557654321",
           "AGENT_WEBHOOK_URL": "https://crm.example.com/agent/events", "ALLOWED_DESTINATIONS": "+1"}  # fmt: skip
    defaults = Settings.from_env(env).default_actions
    async with control_api(twilio, sqlite_store, default_actions=defaults, webhook_secret=WEBHOOK_SECRET) as api:
        form = {"CallSid": "CA" + "4" * 32, "From": "+15557654321", "To": "+15550001111", "CallStatus": "ringing"}
        r = await api.post("/incoming", **signed("/incoming", form))
        assert r.status_code == 200 and "<Stream" in r.text
        record = (await api.get(f"/calls/{inbound_call_id(form['CallSid'])}", headers=AUTH)).json()
    assert record["actions"]["tools"] == [TOOL] and record["actions"]["transfer_to"] == "+15557654321"
    assert record["actions"]["webhook_url"] == "https://crm.example.com/agent/events"


def test_a_default_transfer_number_must_be_dialable() -> None:
    with pytest.raises(ValueError, match="AGENT_TRANSFER_TO must start with a prefix in ALLOWED_DESTINATIONS"):
        Settings.from_env({"AGENT_TRANSFER_TO": "+445550001111", "ALLOWED_DESTINATIONS": "+1"})
