"""Greeting and barge-in: the real media node process against the loopback stand-ins, one call at a time.

    bench/.venv/bin/python -m bench.bridge_bench [--quick]

- greeting: Twilio `start` -> the first agent audio at the caller (the stand-in answers setup and the greeting at
  once, so this is our own time plus loopback hops);
- barge-in: Gemini `interrupted` -> Twilio `clear` at the caller, and how much of the cut turn was sent after it.
Load (calls per core, CPU and RSS per call) is bench/load_bench.py.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

import numpy as np

from bench.node_process import SECRET, bench_call, start_node, stop_node
from call_state.sqlite_store import SqliteCallStore
from call_state.tokens import StreamTokens
from tests.standins.gemini_server import GeminiStandIn, tone_pcm24
from tests.standins.twilio_caller import TwilioCaller


async def barge_and_greeting(rounds: int) -> dict[str, float]:
    async with GeminiStandIn(validate=False, auto_reply=True, reply_ms=200) as gemini:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"{tmp}/calls.db"
            store, tokens = SqliteCallStore(db), StreamTokens(SECRET.encode())
            proc, url = await start_node("ours", gemini.url, db)
            greet, clear, heard_after = [], [], []
            try:
                for i in range(rounds):
                    now = time.time()
                    store.create_call(bench_call(f"g{i}", now))
                    caller = TwilioCaller(url, call_id=f"g{i}", token=tokens.mint(f"g{i}", now),
                                          stream_sid=f"MZ{i:032d}", call_sid=f"CA{i:032x}")  # fmt: skip
                    await caller.connect()
                    session = await gemini.session(i, timeout=20)
                    await caller.wait_for(lambda c=caller: c.first_media_at is not None, timeout=10)
                    assert caller.first_media_at is not None and caller.start_sent_at is not None
                    greet.append((caller.first_media_at - caller.start_sent_at) * 1000)
                    await session.speak_chunks([tone_pcm24(2000)])  # a long turn, then the caller barges in
                    await asyncio.sleep(0.3)
                    sent = time.monotonic()
                    await session.interrupt()
                    await caller.wait_for(lambda c=caller: bool(c.clears), timeout=5)
                    clear.append((caller.clears[0] - sent) * 1000)
                    await asyncio.sleep(0.3)
                    heard_after.append(float(caller.media_after_clear))
                    await caller.close()
            finally:
                await stop_node(proc)
                store.close()
    return {
        "greet_p50": float(np.percentile(greet, 50)), "greet_p99": float(np.percentile(greet, 99)),
        "clear_p50": float(np.percentile(clear, 50)), "clear_p99": float(np.percentile(clear, 99)),
        "media_after_clear": float(sum(heard_after)),
    }  # fmt: skip


def run(quick: bool = False) -> list[dict[str, Any]]:
    small = asyncio.run(barge_and_greeting(5 if quick else 20))
    return [
        {"figure": "greeting: Twilio start → first agent audio (loopback Gemini)", "unit": "ms p50/p99",
         "ours": f"{small['greet_p50']:.0f} / {small['greet_p99']:.0f}"},
        {"figure": "barge-in: Gemini interrupted → Twilio clear", "unit": "ms p50/p99",
         "ours": f"{small['clear_p50']:.1f} / {small['clear_p99']:.1f}"},
        {"figure": "agent audio of the cut turn sent after clear", "unit": "frames", "ours": small["media_after_clear"],
         "target": "0"},
    ]  # fmt: skip


if __name__ == "__main__":
    from bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
