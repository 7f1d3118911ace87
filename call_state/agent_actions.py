"""What the agent may do on a call besides talking: the user's own tools, a transfer to a person, what to do on an
answering machine, recording, and where to send the end-of-call webhook. Set per call by `/make-call` (or from
the environment defaults for `/incoming`), kept in the call record, read by the media node.

Plain data with an explicit JSON shape; `parse_actions()` validates a dict from the wire or a JSON file and raises
`ValueError` naming the field, so the control plane answers 422 and a bad AGENT_TOOLS_FILE stops start-up.
Destination checks (https, no private addresses) are call_state/outbound_policy.py's; numbers against
ALLOWED_DESTINATIONS are the control plane's.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

MAX_TOOLS = 16
TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
RESERVED_TOOLS = frozenset({"end_call", "transfer_call"})  # ours: a user tool may not shadow them
MAX_DESCRIPTION = 1000
MAX_SCHEMA_BYTES = 8 * 1024
MAX_MESSAGE = 2000
DEFAULT_TOOL_TIMEOUT_S = 8.0
MAX_TOOL_TIMEOUT_S = 30.0
E164 = re.compile(r"\+[1-9][0-9]{6,14}")


class VoicemailAction(enum.StrEnum):
    LEAVE_MESSAGE = "leave_message"
    HANG_UP = "hang_up"


@dataclass(frozen=True)
class ToolSpec:
    """One of the user's tools: declared to Gemini, called by POSTing to `url`."""

    name: str
    description: str
    parameters: dict[str, Any]  # a JSON Schema object (lowercase types), passed to Gemini as parametersJsonSchema
    url: str
    timeout_s: float = DEFAULT_TOOL_TIMEOUT_S

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters,
                "url": self.url, "timeout_s": self.timeout_s}  # fmt: skip


@dataclass(frozen=True)
class Voicemail:
    action: VoicemailAction
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action.value, "message": self.message}


@dataclass(frozen=True)
class CallActions:
    tools: tuple[ToolSpec, ...] = ()
    transfer_to: str = ""
    voicemail: Voicemail | None = None
    record: bool = False
    webhook_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tools": [t.to_dict() for t in self.tools],
            "transfer_to": self.transfer_to,
            "voicemail": self.voicemail.to_dict() if self.voicemail else None,
            "record": self.record,
            "webhook_url": self.webhook_url,
        }

    @property
    def urls(self) -> list[str]:
        """Every URL we will send requests to (each must pass the destination policy)."""
        return [t.url for t in self.tools] + ([self.webhook_url] if self.webhook_url else [])


def parse_actions(d: dict[str, Any]) -> CallActions:
    """Validate and build; raises ValueError("field: why") for anything a real user could get wrong."""
    tools_in = d.get("tools") or []
    if not isinstance(tools_in, list):
        raise ValueError("tools: must be a list")
    if len(tools_in) > MAX_TOOLS:
        raise ValueError(f"tools: at most {MAX_TOOLS}")
    tools = tuple(_tool(t, i) for i, t in enumerate(tools_in))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise ValueError("tools: names must be unique")
    transfer_to = _text(d, "transfer_to", 16)
    if transfer_to and not E164.fullmatch(transfer_to):
        raise ValueError("transfer_to: must be E.164, like +15551234567")
    voicemail = _voicemail(d.get("voicemail"))
    record = d.get("record", False)
    if not isinstance(record, bool):
        raise ValueError("record: must be true or false")
    webhook_url = _text(d, "webhook_url", 2048)
    return CallActions(tools, transfer_to, voicemail, record, webhook_url)


def actions_from_record(d: dict[str, Any] | None) -> CallActions:
    """What a stored record says (written by us, so trusted; an old record has none)."""
    return parse_actions(d) if d else CallActions()


def load_tools_file(path: str) -> tuple[ToolSpec, ...]:
    """AGENT_TOOLS_FILE: a JSON list of tools (or {"tools": [...]}) for inbound calls."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return parse_actions({"tools": data["tools"] if isinstance(data, dict) else data}).tools


def _tool(t: object, i: int) -> ToolSpec:
    where = f"tools.{i}"
    if not isinstance(t, dict):
        raise ValueError(f"{where}: must be an object")
    unknown = set(t) - {"name", "description", "parameters", "url", "timeout_s"}
    if unknown:
        raise ValueError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    name = t.get("name")
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise ValueError(f"{where}.name: must match {TOOL_NAME.pattern}")
    if name in RESERVED_TOOLS:
        raise ValueError(f"{where}.name: {name} is the agent's own tool")
    description = t.get("description", "")
    if not isinstance(description, str) or not 0 < len(description) <= MAX_DESCRIPTION:
        raise ValueError(f"{where}.description: 1-{MAX_DESCRIPTION} characters")
    parameters = t.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type", "object") != "object":
        raise ValueError(f"{where}.parameters: must be a JSON Schema object ({{'type': 'object', ...}})")
    if len(json.dumps(parameters)) > MAX_SCHEMA_BYTES:
        raise ValueError(f"{where}.parameters: at most {MAX_SCHEMA_BYTES} bytes of JSON")
    url = t.get("url")
    if not isinstance(url, str) or not 0 < len(url) <= 2048:
        raise ValueError(f"{where}.url: required, at most 2048 characters")
    timeout = t.get("timeout_s", DEFAULT_TOOL_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TOOL_TIMEOUT_S:
        raise ValueError(f"{where}.timeout_s: a number of seconds, at most {MAX_TOOL_TIMEOUT_S:.0f}")
    return ToolSpec(name, description, parameters, url, float(timeout))


def _voicemail(v: object) -> Voicemail | None:
    if v is None:
        return None
    if not isinstance(v, dict) or set(v) - {"action", "message"}:
        raise ValueError("voicemail: must be {'action': 'leave_message' | 'hang_up', 'message': ...}")
    try:
        action = VoicemailAction(str(v.get("action")))
    except ValueError:
        raise ValueError("voicemail.action: leave_message or hang_up") from None
    message = v.get("message", "")
    if not isinstance(message, str) or len(message) > MAX_MESSAGE:
        raise ValueError(f"voicemail.message: text, at most {MAX_MESSAGE} characters")
    if action is VoicemailAction.LEAVE_MESSAGE and not message.strip():
        raise ValueError("voicemail.message: required with leave_message")
    return Voicemail(action, message.strip())


def _text(d: dict[str, Any], name: str, limit: int) -> str:
    value = d.get(name) or ""
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"{name}: text, at most {limit} characters")
    return value.strip()
