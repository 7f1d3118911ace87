"""Calls per core: the node under test pinned to one core, a lean load generator on the others.

    bench/.venv/bin/python -m bench.load_bench [--quick]

For each N, N calls run through the node under test (ours: `python -m media_node`; the vendor-style baseline:
bench/baseline_bridge.py) for MEASURE_S seconds. Each caller streams a 20 ms mu-law frame every 20 ms, a loud one
every 200 ms (the uplink probe: caller send -> the Gemini side receives it), and echoes marks at once. Each Gemini
session sends a 40 ms agent chunk every 200 ms (the downlink probe: Gemini send -> first `media` at the caller).
The node is pinned to core 0 (`os.sched_setaffinity`), this process to the other cores, so the node's CPU is its
own; the generator's own CPU and loop lag are reported so a generator limit is never mistaken for the node's.
N grows until a p99 passes 50 ms (or MAX_CALLS). Per N: p50/p99 both ways, CPU % of one core per call, RSS per call.
At each N the two systems run in turn, REPEATS times: a shared VM's speed drifts by tens of percent between runs
a minute apart, so back-to-back runs of one system would compare drift, not code.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from bench.node_process import SECRET, bench_call, cpu_seconds, rss_mb, start_node
from call_state.sqlite_store import SqliteCallStore
from call_state.tokens import StreamTokens
from media_node.audio import pcm16_to_ulaw

MEASURE_S = 4.0
REPEATS = 3  # runs per system and N, interleaved; the table gives the median CPU
TARGET_P99_MS = 50.0
MAX_CALLS = 800
SIZES = [10, 25, 50, 100, 150, 200, 300, 400, 500, 600, 800]
QUICK_SIZES = [10, 50, 100, 200]


def _ulaw_frame(loud: bool) -> bytes:
    n = np.arange(160)
    return pcm16_to_ulaw((12000 * np.sin(2 * np.pi * 1000 * n / 8000) * loud).astype(np.int16))


SILENT_B64 = base64.b64encode(_ulaw_frame(False)).decode()
LOUD_B64 = base64.b64encode(_ulaw_frame(True)).decode()
_AGENT_PCM = (8000 * np.sin(2 * np.pi * 440 * np.arange(960) / 24000)).astype("<i2").tobytes()  # 40 ms at 24 kHz
_AGENT_PART = {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": base64.b64encode(_AGENT_PCM).decode()}}
AGENT_CHUNK = orjson.dumps({"serverContent": {"modelTurn": {"parts": [_AGENT_PART]}}})
QUIET_PCM16K_B64 = "A" * 24  # a run of zero samples in the middle of a frame: the frame is silence


@dataclass
class Call:
    index: int
    ws: ClientConnection | None = None
    loud_sent: list[float] = field(default_factory=list)
    media_at: list[float] = field(default_factory=list)


@dataclass
class GeminiSide:
    """One Live session as the load sees it: when loud caller audio arrived, when agent chunks were sent."""

    ws: ServerConnection
    loud_at: list[float] = field(default_factory=list)
    sent_at: list[float] = field(default_factory=list)


class LeanGemini:
    """Answers `setup`, notes loud caller frames by a cheap look at the base64, sends agent chunks on demand."""

    def __init__(self) -> None:
        self.sessions: list[GeminiSide] = []
        self.ready = asyncio.Condition()
        self.url = ""

    async def handle(self, ws: ServerConnection) -> None:
        await ws.recv()  # setup
        await ws.send(b'{"setupComplete":{}}')
        side = GeminiSide(ws)
        self.sessions.append(side)
        async with self.ready:
            self.ready.notify_all()
        try:
            async for message in ws:
                text = message if isinstance(message, str) else message.decode()
                key = text.find('"data"')
                if key < 0:
                    continue  # the greeting, or anything that is not audio
                start = text.find('"', key + 6) + 1  # `"data":"…` (orjson) or `"data": "…` (stdlib json)
                middle = text[start + 400 : start + 424]  # samples ~150-158 of the 20 ms frame
                if middle and middle != QUIET_PCM16K_B64:
                    side.loud_at.append(time.monotonic())
        except Exception:  # the node closed the session: the load for this N is over
            return

    async def wait_sessions(self, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout), self.ready:
            await self.ready.wait_for(lambda: len(self.sessions) >= n)


CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]  # read before we pin ourselves


NODE_CORE = CORES[0]


def _cores() -> int:
    return len(CORES)


async def _call(url: str, call: Call, call_id: str, token: str) -> None:
    sid = f"MZ{call.index:032d}"
    ws = await connect(url, compression=None, max_queue=None)
    call.ws = ws
    await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    start = {"event": "start", "streamSid": sid, "start": {"streamSid": sid, "callSid": f"CA{call.index:032x}",
             "accountSid": "", "tracks": ["inbound"], "customParameters": {"call_id": call_id, "token": token},
             "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}  # fmt: skip
    await ws.send(orjson.dumps(start).decode())


async def _receive(call: Call) -> None:
    assert call.ws is not None
    sid = f"MZ{call.index:032d}"
    try:
        async for message in call.ws:
            text = message if isinstance(message, str) else message.decode()
            head = text[:24]
            if '"media"' in head:
                call.media_at.append(time.monotonic())
            elif '"mark"' in head:  # echo at once: the caller "heard" it
                name = orjson.loads(text)["mark"]["name"]
                await call.ws.send(orjson.dumps({"event": "mark", "streamSid": sid, "mark": {"name": name}}).decode())
    except Exception:  # the node closed the stream
        return


async def _stream(calls: list[Call], stop: asyncio.Event, lag: list[float]) -> None:
    """One ticker for every caller: a frame each 20 ms on an absolute clock; loud ones are the uplink probes."""
    frames = {c.index: (f'{{"event":"media","streamSid":"MZ{c.index:032d}","media":{{"track":"inbound",'
                        f'"payload":"{SILENT_B64}"}}}}',
                        f'{{"event":"media","streamSid":"MZ{c.index:032d}","media":{{"track":"inbound",'
                        f'"payload":"{LOUD_B64}"}}}}') for c in calls}  # fmt: skip
    started, tick = time.monotonic(), 0
    while not stop.is_set():
        for call in calls:
            loud = (tick + call.index) % 10 == 0
            assert call.ws is not None
            if loud:
                call.loud_sent.append(time.monotonic())
            try:
                await call.ws.send(frames[call.index][loud])
            except Exception:
                pass
        tick += 1
        delay = started + tick * 0.02 - time.monotonic()
        lag.append(max(0.0, -delay))
        await asyncio.sleep(max(0.0, delay))


async def _speak(sides: list[GeminiSide], stop: asyncio.Event) -> None:
    """Every session sends a 40 ms agent chunk each 200 ms, spread over the 200 ms."""
    started, tick = time.monotonic(), 0
    while not stop.is_set():
        for side in sides[tick % 10 :: 10]:
            side.sent_at.append(time.monotonic())
            try:
                await side.ws.send(AGENT_CHUNK)
            except Exception:
                pass
        tick += 1
        await asyncio.sleep(max(0.0, started + tick * 0.02 - time.monotonic()))


def _latencies(sent: list[float], arrived: list[float]) -> list[float]:
    """Each send matched to the first arrival after it (within 1 s), in ms."""
    out, j = [], 0
    for s in sent:
        while j < len(arrived) and arrived[j] < s:
            j += 1
        if j < len(arrived) and arrived[j] - s < 1.0:
            out.append((arrived[j] - s) * 1000)
    return out


async def run_load(kind: str, n: int) -> dict[str, Any]:
    gemini = LeanGemini()
    async with serve(gemini.handle, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        gemini.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/ws"
        with tempfile.TemporaryDirectory() as tmp:
            db = f"{tmp}/calls.db"
            store, tokens = SqliteCallStore(db), StreamTokens(SECRET.encode())
            core = NODE_CORE if _cores() >= 2 else None
            proc, url = await start_node(kind, gemini.url, db, core=core, max_calls=MAX_CALLS + 10)
            await asyncio.sleep(0.5)
            idle_rss = rss_mb(proc.pid)
            calls = [Call(i) for i in range(n)]
            stop = asyncio.Event()
            tasks: list[asyncio.Task[None]] = []
            try:
                for call in calls:
                    now = time.time()
                    call_id = f"load-{call.index}"
                    store.create_call(bench_call(call_id, now))
                    await _call(url, call, call_id, tokens.mint(call_id, now))
                    tasks.append(asyncio.create_task(_receive(call)))
                    await gemini.wait_sessions(call.index + 1, timeout=30)  # sessions[i] is call i's
                lag: list[float] = []
                tasks.append(asyncio.create_task(_stream(calls, stop, lag)))
                tasks.append(asyncio.create_task(_speak(gemini.sessions, stop)))
                await asyncio.sleep(1.5)  # steady state
                for call in calls:
                    call.loud_sent.clear()
                lag.clear()
                marks = [(len(s.loud_at), len(s.sent_at)) for s in gemini.sessions]
                cpu0, own0, wall0 = cpu_seconds(proc.pid), time.process_time(), time.monotonic()
                await asyncio.sleep(MEASURE_S)
                wall = time.monotonic() - wall0
                cpu, own = (cpu_seconds(proc.pid) - cpu0) / wall, (time.process_time() - own0) / wall
                rss = rss_mb(proc.pid)
                stop.set()
                await asyncio.sleep(0.3)
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for call in calls:
                    if call.ws is not None:
                        await call.ws.close()
                proc.terminate()
                try:
                    await asyncio.to_thread(proc.wait, 15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                store.close()
    up: list[float] = []
    down: list[float] = []
    for call, side, (loud_mark, sent_mark) in zip(calls, gemini.sessions, marks, strict=True):
        up += _latencies(call.loud_sent, side.loud_at[loud_mark:])
        down += _latencies(side.sent_at[sent_mark:], call.media_at)
    return {
        "n": n, "cpu_per_call_pct": cpu * 100 / n, "rss_per_call_mb": max(0.0, rss - idle_rss) / n,
        "generator_cpu_pct": own * 100, "generator_lag_p99_ms": float(np.percentile(lag, 99) * 1000) if lag else 0,
        "up_p50": _pct(up, 50), "up_p99": _pct(up, 99), "down_p50": _pct(down, 50), "down_p99": _pct(down, 99),
        "up_ms": up, "down_ms": down,
    }  # fmt: skip


def combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several runs of one N: the median CPU and RSS (the machine drifts between runs), latencies pooled."""
    up = [v for r in runs for v in r["up_ms"]]
    down = [v for r in runs for v in r["down_ms"]]
    return {
        "n": runs[0]["n"], "runs": len(runs),
        "cpu_per_call_pct": float(np.median([r["cpu_per_call_pct"] for r in runs])),
        "rss_per_call_mb": float(np.median([r["rss_per_call_mb"] for r in runs])),
        "generator_cpu_pct": max(r["generator_cpu_pct"] for r in runs),
        "generator_lag_p99_ms": max(r["generator_lag_p99_ms"] for r in runs),
        "up_p50": _pct(up, 50), "up_p99": _pct(up, 99), "down_p50": _pct(down, 50), "down_p99": _pct(down, 99),
    }  # fmt: skip


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def knees(kinds: tuple[str, ...], sizes: list[int], repeats: int) -> dict[str, list[dict[str, Any]]]:
    """Grow N until each system's p99 passes the target. At every N the systems run in turn, `repeats` times
    (ours, baseline, ours, baseline, ...), so a drift of the machine between runs hits both alike."""
    found: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    live = list(kinds)
    for n in sizes:
        runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in live}
        for _ in range(repeats):
            for kind in live:
                try:
                    runs[kind].append(await run_load(kind, n))
                except Exception as exc:  # a saturated node no longer sets calls up in time: past the knee
                    print(f"  load {kind} with {n} calls: {type(exc).__name__} {exc}", file=sys.stderr)
        for kind in list(live):
            if not runs[kind]:
                live.remove(kind)
                continue
            result = combined(runs[kind])
            found[kind].append(result)
            print(f"  load {kind} {n}: up p99 {result['up_p99']}, down p99 {result['down_p99']}, "
                  f"cpu/call {result['cpu_per_call_pct']:.3f} % (median of {result['runs']}), "
                  f"generator {result['generator_cpu_pct']:.0f} %", file=sys.stderr)  # fmt: skip
            if _p99(result) > TARGET_P99_MS:
                live.remove(kind)
        if not live:
            break
    return found


def _p99(result: dict[str, Any]) -> float:
    return max(result["up_p99"] or 1e9, result["down_p99"] or 1e9)


def calls_per_core(results: list[dict[str, Any]]) -> str:
    within = [r["n"] for r in results if _p99(r) <= TARGET_P99_MS]
    if not within:
        return f"< {results[0]['n']}" if results else "–"
    best = max(within)
    return f"≥ {best}" if best == results[-1]["n"] else str(best)


def run(quick: bool = False) -> list[dict[str, Any]]:
    if _cores() >= 2:
        os.sched_setaffinity(0, set(CORES) - {NODE_CORE})  # the generator keeps off the node's core
    sizes = QUICK_SIZES if quick else SIZES
    found = asyncio.run(knees(("ours", "baseline"), sizes, 1 if quick else REPEATS))
    rows: list[dict[str, Any]] = []
    note = "node pinned to 1 core, load on the other" if _cores() >= 2 else "1 core: load shares it (not isolated)"
    note += "" if quick else f"; CPU: median of {REPEATS} interleaved runs"
    rows.append({"figure": "calls per core at p99 ≤ 50 ms", "unit": "calls", "note": note,
                 "ours": calls_per_core(found["ours"]), "baseline": calls_per_core(found["baseline"])})  # fmt: skip
    by_n = {kind: {r["n"]: r for r in results} for kind, results in found.items()}
    for n in sizes:
        ours, base = by_n["ours"].get(n), by_n["baseline"].get(n)
        if ours is None and base is None:
            continue
        rows.append(
            {
                "figure": f"CPU per call, {n} calls",
                "unit": "% of a core",
                "ours": ours and ours["cpu_per_call_pct"],
                "baseline": base and base["cpu_per_call_pct"],
            }
        )
        rows.append({"figure": f"latency p50/p99 up · down, {n} calls", "unit": "ms",
                     "ours": _pair(ours), "baseline": _pair(base)})  # fmt: skip
        for kind, r in (("ours", ours), ("baseline", base)):
            if r is not None:
                rows.append({"plot": "load_vs_calls", "series": kind, "calls": n, "p99_ms": _p99(r),
                             "cpu_per_call_pct": r["cpu_per_call_pct"]})  # fmt: skip
    rows.append({"figure": "RSS per call (at the largest N within target)", "unit": "MB",
                 "ours": _rss(found["ours"]), "baseline": _rss(found["baseline"])})  # fmt: skip
    generator = max((r["generator_cpu_pct"] for rs in found.values() for r in rs), default=0.0)
    rows.append({"figure": "load generator's own CPU, busiest run", "unit": "% of its core", "ours": generator})
    return rows


def _pair(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    f = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
    return f"{f(r['up_p50'])}/{f(r['up_p99'])} · {f(r['down_p50'])}/{f(r['down_p99'])}"


def _rss(results: list[dict[str, Any]]) -> float | None:
    within = [r for r in results if _p99(r) <= TARGET_P99_MS] or results
    return within[-1]["rss_per_call_mb"] if within else None


if __name__ == "__main__":
    from bench.run import table

    print(table([r for r in run(quick="--quick" in sys.argv) if "plot" not in r]))
