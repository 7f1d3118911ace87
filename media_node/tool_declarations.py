"""The tools the agent is told about in `setup`, by model: ours (`end_call`, `transfer_call` when the call has a
transfer number) and the user's own, from the call's actions.

Model rules (Gemini Live per model): 2.5 and 3.8 run function calls asynchronously (`behavior: NON_BLOCKING`;
3.8's default), 3.1 only synchronously and knows no `behavior` field. The user's tools are declared NON_BLOCKING
where the model can, so the agent keeps talking while the user's server works; their results come back with
`scheduling: WHEN_IDLE` (said when the agent is free). Ours are BLOCKING: the agent waits for the hang-up or the
transfer instead of talking over it. User schemas are JSON Schema (`parametersJsonSchema`); ours are written in
Gemini's OpenAPI subset.
"""

from __future__ import annotations

from typing import Any

from call_state.agent_actions import CallActions

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
WHEN_IDLE = "WHEN_IDLE"

_END_CALL: dict[str, Any] = {
    "name": END_CALL,
    "description": "Hang up the phone call. Say goodbye first; call this only when the conversation is over.",
    "parameters": {"type": "OBJECT", "properties": {"reason": {"type": "STRING"}}},
}
_TRANSFER_CALL: dict[str, Any] = {
    "name": TRANSFER_CALL,
    "description": "Hand the caller over to a person: when they ask for a human, or when you cannot help them. "
    "Tell them you are transferring them first.",
    "parameters": {"type": "OBJECT", "properties": {"reason": {"type": "STRING"}}, "required": ["reason"]},
}


def async_tools(model: str) -> bool:
    """Whether the model runs function calls without stopping (NON_BLOCKING): 2.5 and 3.8 do, 3.1 does not."""
    return "gemini-3.1" not in model


def declarations(model: str, actions: CallActions) -> list[dict[str, Any]]:
    behaviour = async_tools(model)
    ours = [_END_CALL, *([_TRANSFER_CALL] if actions.transfer_to else [])]
    out = [{**tool, "behavior": "BLOCKING"} if behaviour else dict(tool) for tool in ours]
    for spec in actions.tools:
        tool: dict[str, Any] = {"name": spec.name, "description": spec.description,
                                "parametersJsonSchema": spec.parameters}  # fmt: skip
        if behaviour:
            tool["behavior"] = "NON_BLOCKING"
        out.append(tool)
    return out
