"""Baseline for the load benchmark: the bridge a user gets by following the vendor samples.

Written here from the pattern those samples describe (not copied): stdlib `json`, `audioop` (`audioop-lts`)
`ulaw2lin` + `ratecv` with the state thrown away per chunk, 24 kHz -> 16 kHz -> 8 kHz, re-framed to 160 bytes,
`websockets` with its default per-message deflate, no uvloop, one task per direction. It speaks the same wire
protocol as our media node (Twilio Media Streams in, Gemini Live out) so the same load generator drives both.
No token or signature checks: the baseline samples have none.

    bench/.venv/bin/python bench/baseline_bridge.py --port 8090 --gemini-url ws://127.0.0.1:9000/ws
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import base64
import json

import websockets
from websockets.asyncio.server import ServerConnection, serve


async def bridge(twilio: ServerConnection, gemini_url: str, api_key: str) -> None:
    stream_sid = ""
    async with websockets.connect(gemini_url, additional_headers={"x-goog-api-key": api_key}) as gemini:
        ready = asyncio.Event()

        async def from_gemini() -> None:
            buf = b""
            async for raw in gemini:
                msg = json.loads(raw)
                if "setupComplete" in msg:
                    await gemini.send(json.dumps({"realtimeInput": {"text": "Greet the caller."}}))
                    ready.set()
                    continue
                content = msg.get("serverContent") or {}
                if content.get("interrupted"):
                    buf = b""
                    await twilio.send(json.dumps({"event": "clear", "streamSid": stream_sid}))
                for part in (content.get("modelTurn") or {}).get("parts", []):
                    data = (part.get("inlineData") or {}).get("data")
                    if not data:
                        continue
                    pcm24 = base64.b64decode(data)
                    pcm24 = pcm24[: len(pcm24) // 2 * 2]
                    pcm16, _ = audioop.ratecv(pcm24, 2, 1, 24000, 16000, None)
                    pcm8, _ = audioop.ratecv(pcm16, 2, 1, 16000, 8000, None)
                    buf += audioop.lin2ulaw(pcm8, 2)
                    while len(buf) >= 160:
                        frame, buf = buf[:160], buf[160:]
                        payload = base64.b64encode(frame).decode()
                        await twilio.send(
                            json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})
                        )

        reader = asyncio.create_task(from_gemini())
        try:
            async for raw in twilio:
                msg = json.loads(raw)
                event = msg.get("event")
                if event == "start":
                    stream_sid = msg["start"]["streamSid"]
                    model = "models/gemini-3.8-live"
                    setup = {"model": model, "generationConfig": {"responseModalities": ["AUDIO"]}}
                    await gemini.send(json.dumps({"setup": setup}))
                elif event == "media":
                    if not ready.is_set():
                        continue
                    pcm8 = audioop.ulaw2lin(base64.b64decode(msg["media"]["payload"]), 2)
                    pcm16, _ = audioop.ratecv(pcm8, 2, 1, 8000, 16000, None)
                    blob = {"mimeType": "audio/pcm;rate=16000", "data": base64.b64encode(pcm16).decode()}
                    await gemini.send(json.dumps({"realtimeInput": {"audio": blob}}))
                elif event == "stop":
                    break
        finally:
            reader.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--gemini-url", required=True)
    parser.add_argument("--api-key", default="bench-key-not-real")
    args = parser.parse_args()

    async def handler(ws: ServerConnection) -> None:
        try:
            await bridge(ws, args.gemini_url, args.api_key)
        except websockets.ConnectionClosed:
            pass

    async with serve(handler, args.host, args.port, max_size=2**20):
        print("ready", flush=True)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main())
