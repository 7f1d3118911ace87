"""Configuration: defaults, validation with one clear line, .env without overriding, start-up failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from call_state.secrets import resolve_secret_arns
from call_state.settings import ConfigError, Settings, load_environment, read_dotenv

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_configuration() -> None:
    s = Settings.from_env({})
    assert s.port == 8080 and s.host == "127.0.0.1"  # a laptop does not expose the agent to its network
    assert s.call_store == "sqlite:///./data/calls.db"
    assert s.public_url == "http://127.0.0.1:8080"
    assert s.media_stream_url == "ws://127.0.0.1:8080/stream"
    assert s.gemini_model == "gemini-3.8-live"
    assert s.twilio_api_base_url == "https://api.twilio.com"
    assert s.missing_credentials() == [
        "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_PHONE_NUMBER", "GEMINI_API_KEY", "API_KEY",
    ]  # fmt: skip
    assert not s.is_destination_allowed("+15551234567")  # nothing is dialled unless allowed
    assert s.make_call_rate_per_min == 0  # no pacing unless asked for
    assert (s.http_header_timeout_seconds, s.http_keepalive_timeout_seconds, s.max_connections) == (10, 5, 2600)
    assert s.node_id and ":" in s.node_id  # hostname:port


def test_full_configuration() -> None:
    s = Settings.from_env(
        {
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TWILIO_AUTH_TOKEN": "test-auth-token-not-real",
            "TWILIO_PHONE_NUMBER": "+15550001111",
            "GEMINI_API_KEY": "test-gemini-key-not-real",
            "GEMINI_MODEL": "models/gemini-3.1-flash-live-preview",
            "PUBLIC_URL": "https://voice.example.com/",
            "API_KEY": "test-api-key-not-real-0123456789",
            "ALLOWED_DESTINATIONS": "+1, +44,+58",
            "CALL_STORE": "dynamodb://calls-table",
            "PORT": "9000",
        }
    )
    assert s.public_url == "https://voice.example.com"
    assert s.media_stream_url == "wss://voice.example.com/stream"  # all-in-one default
    assert s.gemini_model == "gemini-3.1-flash-live-preview"
    assert s.allowed_destinations == ("+1", "+44", "+58")
    assert s.is_destination_allowed("+584121234567") and not s.is_destination_allowed("+33612345678")
    assert s.missing_credentials() == []


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PUBLIC_URL": "ftp://x"}, "PUBLIC_URL must start with https:// or http://127.0.0.1"),
        ({"PUBLIC_URL": "http://example.com"}, "PUBLIC_URL must start with https://"),
        ({"MEDIA_STREAM_URL": "https://media.example.com/stream"}, "MEDIA_STREAM_URL must start with wss://"),
        ({"MEDIA_STREAM_URL": "wss://m.example.com/stream?x=1"}, "MEDIA_STREAM_URL must start with wss://"),
        ({"PORT": "eighty"}, "PORT must be an integer 1-65535"),
        ({"PORT": "70000"}, "PORT must be an integer 1-65535"),
        ({"MAX_CALL_SECONDS": "-5"}, "MAX_CALL_SECONDS must be an integer"),
        ({"CALL_STORE": "postgres://x"}, "CALL_STORE must be sqlite:///path or dynamodb://TABLE_NAME"),
        ({"ALLOWED_DESTINATIONS": "+1,44"}, "ALLOWED_DESTINATIONS entries must be E.164 prefixes"),
        ({"TWILIO_ACCOUNT_SID": "nope"}, "TWILIO_ACCOUNT_SID must look like AC"),
        ({"TWILIO_PHONE_NUMBER": "555-1234"}, "TWILIO_PHONE_NUMBER must be E.164"),
        ({"STREAM_TOKEN_SECRET": "short"}, "STREAM_TOKEN_SECRET must be at least 16"),
        ({"API_KEY": "short"}, "API_KEY must be at least 16"),
        ({"MAKE_CALL_RATE_PER_MIN": "²"}, "MAKE_CALL_RATE_PER_MIN must be an integer 0-100000"),
        ({"MAX_CONNECTIONS": "100"}, "MAX_CONNECTIONS must be above MAX_CONCURRENT_CALLS"),
        ({"NODE_ID": "node one\n"}, "NODE_ID must be"),
    ],
)
def test_malformed_values_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        Settings.from_env(env)


def test_all_errors_reported_together_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"PORT": "x", "PUBLIC_URL": "ftp://y"})
    text = str(info.value)
    assert "PORT" in text and "PUBLIC_URL" in text and "\n" not in text


def test_dotenv_read_without_overriding(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nPORT=9001\n"
        "export HOST='127.0.0.1'\nAGENT_VOICE=\"Kore\"\nAPI_KEY=from-file # trailing\nbroken line\n"
    )
    assert read_dotenv(dotenv) == {"PORT": "9001", "HOST": "127.0.0.1", "AGENT_VOICE": "Kore", "API_KEY": "from-file"}
    env = load_environment({"PORT": "7000"}, dotenv)
    assert env["PORT"] == "7000" and env["HOST"] == "127.0.0.1"
    assert load_environment({}, tmp_path / "missing.env") == {}


def test_secret_arns_resolved_once_and_json_secrets_split() -> None:
    fetched: list[str] = []
    secrets = {
        "arn:app": '{"TWILIO_AUTH_TOKEN": "test-token-not-real", "GEMINI_API_KEY": "test-gemini-not-real"}',
        "arn:api": "test-api-key-not-real-0123456789",
    }

    def fetch(arn: str) -> str:
        fetched.append(arn)
        return secrets[arn]

    env = resolve_secret_arns(
        {
            "TWILIO_AUTH_TOKEN_SECRET_ARN": "arn:app",
            "GEMINI_API_KEY_SECRET_ARN": "arn:app",
            "API_KEY_SECRET_ARN": "arn:api",
            "STREAM_TOKEN_SECRET": "already-set-locally-123",
            "STREAM_TOKEN_SECRET_SECRET_ARN": "arn:unused",
        },
        fetch,
    )
    assert env["TWILIO_AUTH_TOKEN"] == "test-token-not-real"
    assert env["GEMINI_API_KEY"] == "test-gemini-not-real"
    assert env["API_KEY"] == "test-api-key-not-real-0123456789"
    assert env["STREAM_TOKEN_SECRET"] == "already-set-locally-123"
    assert sorted(fetched) == ["arn:api", "arn:app"]


def test_unreadable_secret_names_the_variable() -> None:
    def fetch(arn: str) -> str:
        raise PermissionError("AccessDenied")

    with pytest.raises(ValueError, match="API_KEY_SECRET_ARN could not be read"):
        resolve_secret_arns({"API_KEY_SECRET_ARN": "arn:x"}, fetch)


def test_secret_arns_from_moto_secrets_manager() -> None:
    from moto import mock_aws

    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="app", SecretString='{"GEMINI_API_KEY": "test-gemini-not-real"}')["ARN"]
        env = resolve_secret_arns({"GEMINI_API_KEY_SECRET_ARN": arn, "AWS_REGION": "us-east-1"})
    assert env["GEMINI_API_KEY"] == "test-gemini-not-real"


@pytest.mark.parametrize("module", ["all_in_one", "media_node"])
def test_bad_config_fails_at_start_with_one_line(module: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GEMINI_", "PUBLIC_URL", "PORT"))}
    env.update({"PORT": "not-a-port", "PYTHONPATH": str(ROOT)})
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error:") and "PORT must be an integer" in lines[0]


@pytest.mark.parametrize(
    "store",
    [
        "sqlite:////proc/voice-agent-test/calls.db",  # a read-only file system, even for root
        "sqlite:///{tmp}/a-file/calls.db",  # its directory would have to be a file
        "sqlite:///{tmp}/corrupt.db",  # not a database
    ],
)
@pytest.mark.parametrize("module", ["all_in_one"])
def test_a_store_that_cannot_be_written_fails_start_up_naming_call_store(
    module: str, store: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "corrupt.db").write_bytes(b"this is not an SQLite file" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GEMINI_", "PUBLIC_URL", "PORT"))}
    env.update({"CALL_STORE": store.format(tmp=tmp_path), "PYTHONPATH": str(ROOT), "PORT": "18099"})
    proc = subprocess.run(
        [sys.executable, "-m", module], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: CALL_STORE"), proc.stderr
    assert "cannot be opened or written" in lines[0]
