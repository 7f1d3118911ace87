"""`POST /browser-calls` and `GET /console` through ASGI, every store backend, and through Mangum (Lambda)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest

from call_state.record import CallStatus, Direction
from call_state.settings import Settings
from call_state.store import CallStore
from call_state.tokens import StreamTokens, TokenError
from lambda_api.app import create_app
from lambda_api.browser_calls import browser_stream_url
from lambda_api.console_routes import ASSETS, CONSOLE_DIR
from tests.control_helpers import beat

API_KEY = "test-api-key-not-real-0123456789"
SECRET = "test-stream-secret-not-real-0123456789"
AUTH = {"Authorization": f"Bearer {API_KEY}"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def console_settings(**overrides: Any) -> Settings:
    env = {"API_KEY": API_KEY, "STREAM_TOKEN_SECRET": SECRET, "GEMINI_API_KEY": "test-gemini-key-not-real",
           "PUBLIC_URL": "https://api.example.com", "MEDIA_STREAM_URL": "wss://media.example.com/stream"}  # fmt: skip
    return replace(Settings.from_env(env), **overrides)


@pytest.fixture
async def api(any_store: CallStore) -> AsyncIterator[httpx.AsyncClient]:
    clock = Clock()
    beat(any_store, clock)  # a media node has reported in
    app = create_app(console_settings(), any_store, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        client.store = any_store  # type: ignore[attr-defined]
        client.clock = app.state.ctx.clock  # type: ignore[attr-defined]
        yield client


async def test_browser_call_creates_a_record_and_a_one_use_token(api: httpx.AsyncClient) -> None:
    body = {"system_prompt": "You are Ana.", "greeting": "Say hi.", "voice": "Kore", "language": "es-ES",
            "metadata": {"crm": "42"}}  # fmt: skip
    response = await api.post("/browser-calls", json=body, headers=AUTH)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert set(answer) == {"call_id", "stream_url", "token"}
    assert answer["stream_url"] == "wss://media.example.com/browser-stream"
    assert response.headers["cache-control"] == "no-store"
    tokens = StreamTokens(SECRET.encode())
    tokens.verify(answer["token"], answer["call_id"], time.time())
    with pytest.raises(TokenError):
        tokens.verify(answer["token"], "c_another_call", time.time())
    store: CallStore = api.store  # type: ignore[attr-defined]
    record = store.get_call(answer["call_id"], time.time())
    assert record is not None and record.direction is Direction.BROWSER and record.status is CallStatus.CREATED
    assert (record.agent.system_prompt, record.agent.voice, record.agent.language) == ("You are Ana.", "Kore", "es-ES")
    assert record.metadata == {"crm": "42"} and record.call_sid == ""
    listed = (await api.get("/calls", headers=AUTH)).json()["calls"]
    assert [c["direction"] for c in listed] == ["browser"]  # browser calls appear like phone calls


async def test_browser_call_defaults_to_the_server_agent(api: httpx.AsyncClient) -> None:
    answer = (await api.post("/browser-calls", content=b"{}", headers=AUTH)).json()
    store: CallStore = api.store  # type: ignore[attr-defined]
    record = store.get_call(answer["call_id"], time.time())
    defaults = console_settings()
    assert record is not None and record.agent.greeting == defaults.agent_greeting
    assert record.agent.voice == defaults.agent_voice


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "invalid_json"),
        (b"[]", 400, "invalid_json"),
        (b'{"voice": "Kore"', 400, "invalid_json"),
        (json.dumps({"destination_number": "+15551230000"}).encode(), 422, "invalid_request"),  # not a phone call
        (json.dumps({"voice": "Kore\u202e"}).encode(), 422, "invalid_request"),  # bidi override
        (json.dumps({"voice": "\uff2bore"}).encode(), 422, "invalid_request"),  # fullwidth letter
        (json.dumps({"language": "en-US\n"}).encode(), 201, None),  # stripped, then valid
        (json.dumps({"system_prompt": "x" * 8001}).encode(), 422, "invalid_request"),
        (json.dumps({"metadata": {"k": "v" * 5000}}).encode(), 422, "invalid_request"),
        (b'{"greeting": "' + b"a" * 40000 + b'"}', 413, "too_large"),
        (b"\xff\xfe{}", 400, "invalid_json"),
    ],
)
async def test_hostile_bodies_get_a_precise_error(
    api: httpx.AsyncClient, body: bytes, status: int, code: str | None
) -> None:
    response = await api.post("/browser-calls", content=body, headers=AUTH)
    assert response.status_code == status, response.text
    if code:
        assert response.json()["error"]["code"] == code


async def test_browser_calls_need_the_key_and_the_media_planes_room(api: httpx.AsyncClient) -> None:
    assert (await api.post("/browser-calls", json={})).status_code == 401
    wrong = {"Authorization": "Bearer test-wrong-key-not-real-000000"}
    assert (await api.post("/browser-calls", json={}, headers=wrong)).status_code == 401
    assert (await api.post("/browser-calls", json={}, headers=AUTH)).status_code == 201
    clock: Clock = api.clock  # type: ignore[attr-defined]
    beat(api.store, clock, draining=True)  # type: ignore[attr-defined]
    draining = await api.post("/browser-calls", json={}, headers=AUTH)
    assert draining.status_code == 503 and draining.json()["error"]["code"] == "draining"
    assert int(draining.headers["retry-after"]) >= 1
    beat(api.store, clock, capacity=1, active_calls=1)  # type: ignore[attr-defined]
    full = await api.post("/browser-calls", json={}, headers=AUTH)
    assert full.status_code == 503 and full.json()["error"]["code"] == "at_capacity"


async def test_browser_calls_are_paced_with_make_call_rate_per_min(sqlite_store: CallStore) -> None:
    clock = Clock()
    beat(sqlite_store, clock)
    app = create_app(console_settings(make_call_rate_per_min=1), sqlite_store, clock=clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        assert (await client.post("/browser-calls", json={}, headers=AUTH)).status_code == 201
        paced = await client.post("/browser-calls", json={}, headers=AUTH)
    assert paced.status_code == 429 and int(paced.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [({"stream_token_secret": ""}, "STREAM_TOKEN_SECRET"), ({"gemini_api_key": ""}, "GEMINI_API_KEY")],
)
async def test_browser_calls_say_what_is_not_configured(
    sqlite_store: CallStore, overrides: dict[str, str], missing: str
) -> None:
    app = create_app(console_settings(**overrides), sqlite_store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        response = await client.post("/browser-calls", json={}, headers=AUTH)
    assert response.status_code == 503 and missing in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("media_stream_url", "expected"),
    [
        ("wss://media.example.com/stream", "wss://media.example.com/browser-stream"),
        ("wss://media.example.com/stream/", "wss://media.example.com/browser-stream"),
        ("wss://example.com/voice/stream", "wss://example.com/voice/browser-stream"),
        ("ws://127.0.0.1:8080/stream", "ws://127.0.0.1:8080/browser-stream"),
    ],
)
def test_browser_stream_url_is_derived_from_media_stream_url(media_stream_url: str, expected: str) -> None:
    assert browser_stream_url(media_stream_url) == expected


async def test_console_is_served_with_a_strict_policy(api: httpx.AsyncClient) -> None:
    page = await api.get("/console")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self' wss://media.example.com" in csp  # the browser call's WebSocket, nothing else
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for hook in ("api-key", "sign-in", "calls", "new-call", "talk", "hangup", "call-status", "transcript"):
        assert f'id="{hook}"' in page.text, hook
    assert "<script>" not in page.text and " style=" not in page.text and "http" not in page.text.split("<body>")[0]
    worklet = await api.get("/console/audio-worklet.js")
    assert worklet.status_code == 200 and worklet.headers["content-type"].startswith("text/javascript")
    etag = (await api.get("/console/app.js")).headers["etag"]
    cached = await api.get("/console/app.js", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert (await api.get("/", follow_redirects=False)).headers["location"] == "console"


@pytest.mark.parametrize(
    "path",
    ["/console/../lambda_api/app.py", "/console/%2e%2e%2fapp.py", "/console/..%2F..%2Fetc%2Fpasswd",
     "/console/app.py", "/console/app.js%00.css", "/console/index.html", "/console/APP.JS",
     "/console/" + "a" * 5000 + ".js", "/console/%E2%80%AEsj.ppa"],
)  # fmt: skip
async def test_console_serves_only_its_own_files(api: httpx.AsyncClient, path: str) -> None:
    response = await api.get(path)
    assert response.status_code == 404, path
    assert b"import" not in response.content and b"root:" not in response.content


def test_every_console_file_is_served_and_references_only_local_files() -> None:
    on_disk = {p.name for p in CONSOLE_DIR.iterdir()}
    assert set(ASSETS) == on_disk  # nothing in the folder is left unserved (or of an unknown type)
    for name, asset in ASSETS.items():
        text = asset.body.decode().replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert "innerHTML" not in text and "eval(" not in text and "new Function" not in text, name


def test_console_and_browser_calls_through_the_lambda_handler(
    monkeypatch: pytest.MonkeyPatch, moto_store: CallStore
) -> None:
    from lambda_api import handler
    from tests.test_control_lambda import load

    env = {"API_KEY": API_KEY, "STREAM_TOKEN_SECRET": SECRET, "GEMINI_API_KEY": "test-gemini-key-not-real",
           "CALL_STORE": "dynamodb://calls-test", "AWS_REGION": "us-east-1",
           "MEDIA_STREAM_URL": "wss://media.example.com/stream"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    handler.reset()
    beat(moto_store, Clock())  # the media node has reported in
    event = load("healthz_default_stage.json")
    event.update(rawPath="/console", requestContext={**event["requestContext"],
                 "http": {**event["requestContext"]["http"], "method": "GET", "path": "/console"}})  # fmt: skip
    page = handler.handler(event, None)
    assert page["statusCode"] == 200 and 'id="talk"' in page["body"]
    assert "connect-src 'self' wss://media.example.com" in page["headers"]["content-security-policy"]
    post = load("make_call_default_stage.json")
    post.update(rawPath="/browser-calls", body=json.dumps({"voice": "Kore"}), isBase64Encoded=False)
    post["requestContext"]["http"]["path"] = "/browser-calls"
    post["headers"]["authorization"] = f"Bearer {API_KEY}"
    answer = handler.handler(post, None)
    assert answer["statusCode"] == 201, answer["body"]
    call_id = json.loads(answer["body"])["call_id"]
    record = moto_store.get_call(call_id, time.time())
    assert record is not None and record.direction is Direction.BROWSER and record.agent.voice == "Kore"
    handler.reset()
