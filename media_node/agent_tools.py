"""The agent's tools: what happens when Gemini sends a `toolCall` (today `end_call`; anything else is refused).

Gemini gets an answer for every call id it sends (`toolResponse`), so a model that waits for one never hangs.
"""

from __future__ import annotations

from call_state.ids import SAFE_TEXT, TOOL_NAME, loggable
from media_node.call_context import CallContext
from media_node.call_ending import CallEnding
from media_node.call_phase import CallOutcome
from media_node.gemini_session import ToolCall
from media_node.gemini_sessions import GeminiSessions
from media_node.tool_declarations import END_CALL


class AgentTools:
    def __init__(self, ctx: CallContext, sessions: GeminiSessions, ending: CallEnding) -> None:
        self._ctx, self._sessions, self._ending = ctx, sessions, ending

    async def call(self, call: ToolCall) -> None:
        if call.name != END_CALL:
            self._ctx.log.warning("Gemini called an unknown tool %s", loggable(call.name, TOOL_NAME))
            await self._sessions.send_tool_response(call.call_id, call.name, {"error": "unknown tool"})
            return
        reason = call.args.get("reason")
        self._ctx.log.info("agent ended the call (%s)", loggable(reason, SAFE_TEXT) if reason else "no reason given")
        await self._sessions.send_tool_response(call.call_id, call.name, {"result": "ok"})
        self._ending.say_goodbye(CallOutcome.HUNG_UP_BY_AGENT, "the agent ended the call")
