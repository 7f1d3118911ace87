"""The agent's tools: what happens when Gemini sends a `toolCall`.

- `end_call`: answer, then the goodbye plays out and the call is hung up.
- `transfer_call` (calls with a transfer number): the agent's current sentence finishes playing, then Twilio is
  told to `<Dial>` the number (the stream ends, the caller is bridged to the person); if Twilio refuses, the agent
  hears why and the call goes on.
- the user's own tools: a signed POST to the tool's URL (call_state/outbound.py) in a task of the call, so audio
  never waits for it; the answer is `{"result": <JSON>}` or `{"error": "<reason>"}`; a `toolCallCancellation`
  cancels the request in flight.
Every call id Gemini sends gets an answer (unless it cancelled it), and every call is written to the record.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Protocol

from call_state.agent_actions import CallActions, ToolSpec
from call_state.ids import SAFE_TEXT, TOOL_NAME, loggable
from call_state.outbound import OutboundClient
from call_state.record import ToolCallRecord
from media_node.agent_playout import AgentPlayout
from media_node.call_context import CallContext
from media_node.call_ending import CallEnding
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.call_writes import CallWrites
from media_node.gemini_session import ToolCall, ToolCallCancelled
from media_node.gemini_sessions import GeminiSessions
from media_node.task_scope import TaskScope
from media_node.tool_declarations import END_CALL, TRANSFER_CALL, WHEN_IDLE

SENTENCE_GRACE_S = 8.0  # longest we let the agent finish its sentence before a transfer
MAX_ARGUMENT_BYTES = 16 * 1024


class Transferrer(Protocol):
    """Twilio's REST update of the live call (TwilioRestClient.transfer)."""

    async def __call__(self, call_sid: str, number: str) -> None: ...


class AgentTools:
    def __init__(
        self,
        ctx: CallContext,
        lifecycle: CallLifecycle,
        actions: CallActions,
        sessions: GeminiSessions,
        playout: AgentPlayout,
        ending: CallEnding,
        writes: CallWrites,
        scope: TaskScope,
        outbound: OutboundClient | None,
        transfer: Transferrer | None,
        call_sid: Callable[[], Awaitable[str]],
    ) -> None:
        self._ctx, self._lifecycle, self._actions, self._sessions = ctx, lifecycle, actions, sessions
        self._playout, self._ending, self._writes, self._scope = playout, ending, writes, scope
        self._outbound, self._transfer, self._call_sid = outbound, transfer, call_sid
        self._specs = {spec.name: spec for spec in actions.tools}
        self._running: dict[str, asyncio.Task[object]] = {}

    async def call(self, call: ToolCall) -> None:
        if call.name == END_CALL:
            reason = call.args.get("reason")
            self._ctx.log.info("agent ended the call (%s)", loggable(reason, SAFE_TEXT) if reason else "no reason")
            await self._sessions.send_tool_response(call.call_id, call.name, {"result": "ok"})
            self._ending.say_goodbye(CallOutcome.HUNG_UP_BY_AGENT, "the agent ended the call")
        elif call.name == TRANSFER_CALL and self._actions.transfer_to:
            self._spawn(call, self._transfer_call(call))
        elif call.name in self._specs:
            self._spawn(call, self._user_tool(self._specs[call.name], call))
        else:
            self._ctx.log.warning("Gemini called an unknown tool %s", loggable(call.name, TOOL_NAME))
            await self._sessions.send_tool_response(call.call_id, call.name, {"error": "unknown tool"})

    def cancelled(self, event: ToolCallCancelled) -> None:
        for call_id in event.call_ids:
            task = self._running.pop(call_id, None)
            if task is not None:
                task.cancel()

    def _spawn(self, call: ToolCall, work: Awaitable[object]) -> None:
        task = self._scope.spawn(_run(work), name=f"tool-{call.name}")
        if task is not None:
            self._running[call.call_id] = task
            task.add_done_callback(lambda _: self._running.pop(call.call_id, None))

    async def _user_tool(self, spec: ToolSpec, call: ToolCall) -> None:
        started, at = self._ctx.monotonic(), self._ctx.clock()
        status, error = "ok", ""
        try:
            if self._outbound is None:
                status, error = "error", "tools are not configured on this node (WEBHOOK_SECRET)"
                response: dict[str, object] = {"error": error}
            else:
                payload = {"call_id": self._ctx.call_id, "tool_call_id": call.call_id, "name": call.name,
                           "arguments": call.args}  # fmt: skip
                result = await self._outbound.post_json(spec.url, payload, timeout_s=spec.timeout_s)
                if result.ok:
                    response = {"result": result.data}
                else:
                    status, error = result.failure.value if result.failure else "error", result.detail
                    response = {"error": result.detail}
            await self._sessions.send_tool_response(call.call_id, call.name, response, scheduling=WHEN_IDLE)
        except asyncio.CancelledError:
            status, error = "cancelled", "Gemini cancelled the call"
            raise
        finally:
            ms = round((self._ctx.monotonic() - started) * 1000, 1)
            self._ctx.log.info("tool %s: %s in %.0f ms%s", call.name, status, ms, f" ({error[:120]})" if error else "")
            self._writes.tool_call(ToolCallRecord(call.call_id, call.name, _bounded(call.args), status, ms, at, error))

    async def _transfer_call(self, call: ToolCall) -> None:
        number = self._actions.transfer_to
        started, at = self._ctx.monotonic(), self._ctx.clock()
        try:  # the agent's current sentence ("I'm transferring you now") finishes playing first
            async with asyncio.timeout(SENTENCE_GRACE_S):
                await self._playout.wait_idle()
        except TimeoutError:
            pass
        sid = await self._call_sid()
        error = ""
        if self._transfer is None or not sid:
            error = "transfers need Twilio credentials and a dialled call"
        else:
            try:
                await self._transfer(sid, number)
            except Exception as exc:  # Twilio refused or is unreachable: the agent must know, the call goes on
                error = f"the transfer failed: {str(exc)[:200]}"
        ms = round((self._ctx.monotonic() - started) * 1000, 1)
        record = ToolCallRecord(call.call_id, call.name, _bounded(call.args), "error" if error else "ok", ms, at, error)
        self._writes.tool_call(record)
        if error:
            self._ctx.log.warning("transfer to %s… failed: %s", number[:4], error)
            await self._sessions.send_tool_response(call.call_id, call.name, {"error": error})
            return
        self._ctx.log.info("transferred to %s…: Twilio now bridges the caller to the person", number[:4])
        self._writes.transferred(number)
        await self._sessions.send_tool_response(call.call_id, call.name, {"result": "transferring"})
        self._lifecycle.begin_goodbye(CallOutcome.TRANSFERRED, f"transferred to {number[:4]}…")  # Twilio ends it


async def _run(work: Awaitable[object]) -> None:
    await work


def _bounded(args: dict[str, object]) -> dict[str, object]:
    """Arguments as stored in the record: as given, unless they are unreasonably large."""
    text = json.dumps(args, default=str)
    return args if len(text) <= MAX_ARGUMENT_BYTES else {"truncated": text[:MAX_ARGUMENT_BYTES]}
