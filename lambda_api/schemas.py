"""Request bodies, validated with size limits so a bad request is a precise 422, never a crash."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from call_state.agent_actions import CallActions, parse_actions

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
MAX_METADATA_BYTES = 4096


class AgentRequest(BaseModel):
    """The agent fields: `POST /browser-calls` takes exactly these, `POST /make-call` adds the destination."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    system_prompt: str | None = Field(default=None, min_length=1, max_length=8000)
    greeting: str | None = Field(default=None, min_length=1, max_length=1000)
    voice: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def metadata_is_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes of JSON")
        return value

    def canonical(self) -> str:
        """Stable JSON of the request, for comparing Idempotency-Key retries."""
        return json.dumps(self.model_dump(), sort_keys=True, separators=(",", ":"))


class MakeCallRequest(AgentRequest):
    """The agent fields, the destination, and what the agent may do (validated by call_state.agent_actions:
    `actions()` raises ValueError("field: why"), answered as a 422 naming the field)."""

    destination_number: str = Field(pattern=E164_PATTERN, description="E.164, e.g. +584121234567")
    machine_detection: StrictBool = False  # AMD without a reaction: the record gets `answered_by` (see docs)
    tools: list[Any] | None = None
    transfer_to: str | None = None
    voicemail: dict[str, Any] | None = None
    record: StrictBool = False
    webhook_url: str | None = None

    def actions(self) -> CallActions:
        return parse_actions({"tools": self.tools, "transfer_to": self.transfer_to, "voicemail": self.voicemail,
                              "record": self.record, "webhook_url": self.webhook_url})  # fmt: skip
