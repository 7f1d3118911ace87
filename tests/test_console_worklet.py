"""The console's AudioWorklet (lambda_api/console/audio-worklet.js) run under Node with the worklet globals stubbed.

Bit-exact G.711 against the media node's tables (which are bit-exact with audioop), the capture resampler's
band and alias rejection, and the player: level and images of interpolated audio, marks echoed after their audio
has played, `clear` dropping the queue at once and echoing every pending mark.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from media_node.audio import ULAW_DECODE, pcm16_to_ulaw

WORKLET = Path(__file__).resolve().parent.parent / "lambda_api" / "console" / "audio-worklet.js"

HARNESS = r"""
const vm = require("vm"), fs = require("fs");
const [, , path, rate, scenario] = process.argv;
const posted = [];
const ctx = {
  sampleRate: Number(rate), currentTime: 0, Math, Float32Array, Uint8Array, Array,
  registerProcessor: (name, cls) => { ctx.processors[name] = cls; }, processors: {},
  AudioWorkletProcessor: class { constructor() { this.port = { postMessage: (m) => posted.push(m) }; } },
};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(path, "utf8") +
  "\nglobalThis.floatToUlaw = floatToUlaw; globalThis.ULAW_TO_FLOAT = ULAW_TO_FLOAT;", ctx);
const input = JSON.parse(fs.readFileSync(0, "utf8"));
const out = {};
if (scenario === "codec") {
  out.encoded = input.samples.map((s) => ctx.floatToUlaw(s / 32767));
  out.decoded = Array.from(ctx.ULAW_TO_FLOAT, (x) => Math.round(x * 32768));
} else if (scenario === "capture") {
  const node = new ctx.processors["mic-capture"]();
  const x = Float32Array.from(input.samples);
  for (let i = 0; i + 128 <= x.length; i += 128) node.process([[x.subarray(i, i + 128)]]);
  out.ulaw = posted.filter((m) => m.type === "frame").flatMap((m) => Array.from(new Uint8Array(m.ulaw)));
} else if (scenario === "player") {
  const node = new ctx.processors["agent-player"]({ processorOptions: { prebufferMs: 60 } });
  const buf = new Float32Array(128);
  const played = [], events = [];
  let quantum = 0;
  const step = () => {
    node.process([], [[buf]]);
    played.push(...buf);
    ctx.currentTime += 128 / ctx.sampleRate;
    quantum += 1;
    while (posted.length) events.push({ quantum, ...posted.shift() });
  };
  for (const action of input.actions) {
    if (action.run) for (let i = 0; i < action.run; i++) step();
    else if (action.audio) node.port.onmessage({ data: { type: "audio", ulaw: Uint8Array.from(action.audio).buffer } });
    else node.port.onmessage({ data: action });
  }
  out.played = played;
  out.events = events.filter((e) => e.type !== "stats");
}
process.stdout.write(JSON.stringify(out));
"""


def run_worklet(scenario: str, rate: int, data: dict[str, Any]) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is missing (make test needs Node 20+ for the CDK CLI too)")
        pytest.skip("node is missing")
    proc = subprocess.run([node, "-e", HARNESS, "x", str(WORKLET), str(rate), scenario], input=json.dumps(data),
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_mu_law_is_bit_exact_with_the_media_node() -> None:
    samples = np.arange(-32767, 32768, 7, dtype=np.int16)
    result = run_worklet("codec", 48000, {"samples": samples.tolist()})
    assert bytes(result["encoded"]) == pcm16_to_ulaw(samples)
    assert result["decoded"] == ULAW_DECODE.tolist()


def tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def level_db(x: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of `freq` in `x`, dB relative to full scale (a least-squares fit of sine and cosine)."""
    t = np.arange(len(x)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(20 * np.log10(max(np.hypot(*coef), 1e-9)))


@pytest.mark.parametrize("rate", [48000, 44100])
def test_capture_keeps_the_phone_band_and_rejects_what_would_alias(rate: int) -> None:
    for freq, expected in ((1000, "pass"), (3000, "pass"), (6000, "reject"), (9000, "reject")):
        result = run_worklet("capture", rate, {"samples": tone(freq, rate, 0.5).tolist()})
        ulaw = bytes(result["ulaw"])
        assert len(ulaw) % 160 == 0 and abs(len(ulaw) - 4000) <= 160  # 8 kHz, whole 20 ms frames
        pcm = ULAW_DECODE[np.frombuffer(ulaw, dtype=np.uint8)][400:].astype(np.float64) / 32768
        if expected == "pass":
            assert abs(level_db(pcm, freq, 8000) - 20 * np.log10(0.5)) < 1.0, (freq, rate)
        else:  # 6 kHz would fold to 2 kHz, 9 kHz to 1 kHz: both must be far below the signal
            alias = abs(8000 - freq) if freq < 8000 else freq - 8000
            assert level_db(pcm, alias, 8000) < -50, (freq, rate)


def test_player_interpolates_cleanly_and_echoes_marks_after_their_audio() -> None:
    ulaw = list(pcm16_to_ulaw((tone(1000, 8000, 0.3) * 32767).astype(np.int16)))
    actions = [{"audio": ulaw}, {"type": "mark", "name": "m1"}, {"run": 200}]
    result = run_worklet("player", 48000, {"actions": actions})
    played = np.array(result["played"])
    sound = np.flatnonzero(np.abs(played) > 0.01)
    assert len(sound) and abs((sound[-1] - sound[0]) / 48000 - 0.3) < 0.01  # all 300 ms played, once
    body = played[sound[0] + 960 : sound[-1] - 960]
    assert abs(level_db(body, 1000, 48000) - 20 * np.log10(0.5)) < 0.5
    assert level_db(body, 7000, 48000) < -55 and level_db(body, 9000, 48000) < -55  # images of 1 kHz
    (mark,) = [e for e in result["events"] if e["type"] == "mark"]
    assert mark["name"] == "m1" and abs(mark["quantum"] * 128 - sound[-1]) < 2 * 128  # when its audio ended
    started = [e for e in result["events"] if e["type"] == "playing"]
    assert len(started) == 1 and started[0]["queuedMs"] == pytest.approx(300, abs=1)


def test_player_clear_stops_at_once_and_echoes_pending_marks() -> None:
    ulaw = list(pcm16_to_ulaw((tone(440, 8000, 2.0) * 32767).astype(np.int16)))
    actions = [{"audio": ulaw}, {"type": "mark", "name": "a"}, {"audio": ulaw}, {"type": "mark", "name": "b"},
               {"run": 100}, {"type": "clear"}, {"run": 400}]  # fmt: skip
    result = run_worklet("player", 48000, {"actions": actions})
    played = np.array(result["played"])
    cut = 100 * 128
    assert np.max(np.abs(played[cut - 256 : cut])) > 0.3  # it was playing when `clear` came
    assert np.max(np.abs(played[cut + 128 :])) < 1e-3  # silent from the next render quantum, and stays so
    (cleared,) = [e for e in result["events"] if e["type"] == "cleared"]
    assert cleared["names"] == ["a", "b"] and cleared["droppedMs"] > 3500
    assert [e for e in result["events"] if e["type"] == "mark"] == []  # neither was "played"
