"""One media stream from accept to close: admit it, run the call, tear it down. Called by the WebSocket routes
(app.py) and, with in-memory sockets, by the tests.

Teardown always runs in the same order: the call's tasks are done (TaskScope), the Gemini sockets are closed,
the last transcript turns and the figures are queued, the Twilio socket is closed (a no-op if Twilio went first),
the call slot is released, then the call's store writes are awaited (bounded). An ordinary end is one INFO line;
only a bug logs a traceback (outcome `error`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from media_node.call_builder import build_call
from media_node.call_context import CallContext, CallLog
from media_node.call_phase import CallLifecycle, CallOutcome
from media_node.stream_auth import StreamRefused
from media_node.stream_intake import StreamIntake
from media_node.task_scope import TaskScope
from media_node.twilio_socket import TwilioSocket

if TYPE_CHECKING:
    from media_node.node import MediaNode

log = logging.getLogger("media_node.call")
SETTLE_WRITES_S = 10.0


async def handle_stream(node: MediaNode, socket: TwilioSocket, headers: Mapping[str, str], browser: bool) -> str:
    """Serve one accepted socket (its pending slot taken by `node.accept_socket()`); returns the outcome."""
    ctx = CallContext(CallLog(log), node.metrics, node.writer)
    intake = StreamIntake(node.gate, node.store, node.admission, node.node_id, ctx, browser)
    try:
        admitted = await intake.admit(socket, headers)
    except StreamRefused as exc:
        ctx.log.warning("stream refused: %s", exc)
        node.metrics.rejected.labels(reason=exc.code).inc()
        await socket.close(exc.close_code, exc.code)
        node.call_refused()
        return CallOutcome.REFUSED
    node.call_admitted()
    lifecycle = CallLifecycle()
    lifecycle.admitted()
    ctx.log.info("stream %s admitted (%s call)", admitted.started.stream_sid, admitted.record.direction.value)
    bridge, crashed = None, False
    try:
        async with TaskScope() as scope:
            bridge = build_call(node, socket, admitted, ctx, lifecycle, scope)
            await bridge.run()
    except Exception:  # a bug in one call: its traceback, then the other calls go on
        ctx.log.exception("call crashed")
        crashed = True
        lifecycle.end(CallOutcome.ERROR, "crashed")
    finally:
        outcome = CallOutcome.ERROR if crashed else lifecycle.outcome or CallOutcome.ERROR
        if bridge is not None:
            await bridge.sessions.close()
            bridge.writes.turns(bridge.conv.finish(ctx.clock()))
            figures = bridge.conv.figures(bridge.sessions.reconnects)
            bridge.writes.figures(figures)
            if browser:  # no Twilio status callback will ever say a browser call is over
                bridge.writes.ended(outcome)
            elif admitted.record.actions.webhook_url:  # the last write: the media side of the call is done
                ctx.write("end of call", lambda: node.end_of_call.media_done(ctx.call_id, ctx.clock()))
        await socket.close(1000, "call ended")
        node.call_ended(outcome)
    ctx.log.info("ended (%s: %s)", outcome.value, lifecycle.reason)
    if not await node.writer.settled(ctx.call_id, SETTLE_WRITES_S):
        ctx.log.error("store writes of this call still pending after %.0f s (kept, retried)", SETTLE_WRITES_S)
    return outcome
