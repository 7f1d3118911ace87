"""Transcoding cost, delay and quality: ours vs pipecat 1.x (soxr stream resampler) vs audioop ratecv.

    bench/.venv/bin/python -m bench.audio_bench [--quick]

Every method is fed the same 20 ms chunks a call produces: 160 B mu-law from Twilio (-> PCM16 16 kHz for Gemini),
960 B PCM16 24 kHz from Gemini (-> mu-law 8 kHz for Twilio). State is kept across chunks for all three.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from media_node.audio import CallAudio, pcm16_to_ulaw, ulaw_to_pcm16

try:
    import audioop  # stdlib before Python 3.13; audioop-lts after
except ImportError:  # pragma: no cover
    audioop = None  # type: ignore[assignment]


# --- the three transcoders, behind one shape: up(ulaw160) -> pcm16k, down(pcm24) -> ulaw ----------------------
class Ours:
    name = "ours"

    def __init__(self) -> None:
        self.audio = CallAudio()

    def up(self, ulaw: bytes) -> bytes:
        return self.audio.caller_to_gemini(ulaw)

    def down(self, pcm24: bytes) -> bytes:
        return self.audio.gemini_to_caller(pcm24)

    def flush(self) -> bytes:
        return self.audio.flush_caller()


class AudioopRatecv:
    name = "audioop"

    def __init__(self) -> None:
        self.up_state: Any = None
        self.down_state: Any = None

    def up(self, ulaw: bytes) -> bytes:
        pcm, self.up_state = audioop.ratecv(audioop.ulaw2lin(ulaw, 2), 2, 1, 8000, 16000, self.up_state)
        return bytes(pcm)

    def down(self, pcm24: bytes) -> bytes:
        pcm, self.down_state = audioop.ratecv(pcm24, 2, 1, 24000, 8000, self.down_state)
        return bytes(audioop.lin2ulaw(pcm, 2))

    def flush(self) -> bytes:
        return b""


class Pipecat:
    """pipecat's own Twilio path: pipecat.audio.utils ulaw_to_pcm / pcm_to_ulaw with SOXRStreamAudioResampler."""

    name = "pipecat"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
        from pipecat.audio.utils import pcm_to_ulaw as pc_pcm_to_ulaw
        from pipecat.audio.utils import ulaw_to_pcm as pc_ulaw_to_pcm

        self.loop = loop
        self.in_resampler, self.out_resampler = SOXRStreamAudioResampler(), SOXRStreamAudioResampler()
        self._ulaw_to_pcm, self._pcm_to_ulaw = pc_ulaw_to_pcm, pc_pcm_to_ulaw

    def up(self, ulaw: bytes) -> bytes:
        return bytes(self.loop.run_until_complete(self._ulaw_to_pcm(ulaw, 8000, 16000, self.in_resampler)))

    def down(self, pcm24: bytes) -> bytes:
        return bytes(self.loop.run_until_complete(self._pcm_to_ulaw(pcm24, 24000, 8000, self.out_resampler)))

    def flush(self) -> bytes:
        return b""


def transcoders() -> list[Callable[[], Any]]:
    makers: list[Callable[[], Any]] = [Ours]
    try:
        import pipecat  # noqa: F401

        loop = asyncio.new_event_loop()
        makers.append(lambda: Pipecat(loop))
    except ImportError:
        print("pipecat is not installed (bench/.venv): its column stays empty", file=sys.stderr)
    if audioop is not None:
        makers.append(AudioopRatecv)
    return makers


# --- signals and measurements -----------------------------------------------------------------------------------
def tone(freq: float, rate: int, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def cpu_us_per_frame_pair(make: Callable[[], Any], iterations: int) -> float:
    t = make()
    ulaw = pcm16_to_ulaw(tone(440, 8000, 0.02).astype(np.int16))
    pcm24 = tone(440, 24000, 0.02).astype("<i2").tobytes()
    for _ in range(200):
        t.up(ulaw), t.down(pcm24)
    samples = []
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(iterations):
            t.up(ulaw)
            t.down(pcm24)
        samples.append((time.perf_counter_ns() - started) / iterations / 1000)
    return float(np.median(samples))


def delay_ms(signal_in: np.ndarray, signal_out: np.ndarray, rate_out: int, ratio: float) -> float:
    """Lag of the output against the input (resampled by index), by cross-correlation peak."""
    n = min(len(signal_out), int(len(signal_in) * ratio))
    ref = np.interp(np.arange(n) / ratio, np.arange(len(signal_in)), signal_in)
    corr = np.correlate(signal_out[:n], ref[: n - 400], "valid")
    return float(np.argmax(corr) / rate_out * 1000)


def downlink_run(make: Callable[[], Any], pcm24: bytes, flush: bool) -> tuple[bytes, float]:
    """Feed 20 ms chunks; return the output and the most audio ever held back (ms)."""
    t, out, held = make(), b"", 0.0
    for i, chunk in enumerate(chunks(pcm24, 960)):
        out += t.down(chunk)
        held = max(held, (i + 1) * 20 - len(out) / 8)
    if flush:
        out += t.flush()
    return out, held


def uplink_run(make: Callable[[], Any], ulaw: bytes) -> tuple[bytes, float]:
    t, out, held = make(), b"", 0.0
    for i, chunk in enumerate(chunks(ulaw, 160)):
        out += t.up(chunk)
        held = max(held, (i + 1) * 20 - len(out) / 32)
    return out, held


def sinad_db(x: np.ndarray, ref: np.ndarray) -> float:
    gain = np.dot(x, ref) / np.dot(ref, ref)
    return float(10 * np.log10(np.sum((gain * ref) ** 2) / np.sum((x - gain * ref) ** 2)))


def aligned_sinad(out: np.ndarray, freq: float, rate: int) -> float:
    """SINAD against the least-squares sinusoid at `freq` (any phase, so any delay, exactly)."""
    body = out[rate // 10 : -rate // 10]
    n = np.arange(len(body))
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate), np.ones(len(n))], 1)
    coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
    fitted = basis @ coef
    return float(10 * np.log10(np.sum(fitted**2) / np.sum((body - fitted) ** 2)))


def ideal_upsample(x: np.ndarray, delay_samples16: float) -> np.ndarray:
    """Band-limited x2 interpolation by FFT, shifted by the method's own delay (so only error remains)."""
    spectrum = np.fft.rfft(x)
    n_out = 2 * len(x)
    padded = np.zeros(n_out // 2 + 1, dtype=complex)
    padded[: len(spectrum)] = spectrum
    freqs = np.arange(len(padded)) / n_out
    padded *= np.exp(-2j * np.pi * freqs * delay_samples16)
    return np.fft.irfft(padded, n_out) * 2


def uplink_snr_db(make: Callable[[], Any]) -> float:
    rng = np.random.default_rng(3)
    speechy = sum(a * np.sin(2 * np.pi * f * np.arange(16000) / 8000 + p) for a, f, p in
                  zip(rng.uniform(500, 2000, 12), rng.uniform(300, 3300, 12), rng.uniform(0, 6, 12),
                      strict=True))  # fmt: skip
    ulaw = pcm16_to_ulaw(np.asarray(speechy).astype(np.int16))
    decoded = ulaw_to_pcm16(ulaw).astype(np.float64)  # the reference starts from the same mu-law samples
    out = np.frombuffer(uplink_run(make, ulaw)[0], dtype="<i2").astype(np.float64)
    body = slice(1600, len(out) - 1600)

    def snr(lag: float) -> float:
        return sinad_db(out[body], ideal_upsample(decoded, lag)[: len(out)][body])

    lag = max(np.arange(0, 200, 0.5), key=snr)  # coarse, then refine the fractional delay
    for step in (0.1, 0.02, 0.004):
        lag = max(np.arange(lag - 5 * step, lag + 5 * step, step), key=snr)
    return snr(lag)


def alias_rejection_db(make: Callable[[], Any]) -> float:
    pcm24 = tone(6000, 24000, 1.0, amplitude=16000).astype("<i2").tobytes()
    out, _ = downlink_run(make, pcm24, flush=False)
    y = ulaw_to_pcm16(out).astype(np.float64)[800:]
    rms = np.sqrt(np.mean(y**2)) or 1e-3  # below mu-law's smallest step: report the floor
    return float(20 * np.log10(rms / (16000 / np.sqrt(2))))


def run(quick: bool = False) -> list[dict[str, Any]]:
    makers = transcoders()
    names = [m().name for m in makers]
    iterations = 300 if quick else 3000
    rows: list[dict[str, Any]] = []

    def row(figure: str, unit: str, target: str, values: list[float | None]) -> None:
        rows.append({"figure": figure, "unit": unit, "target": target, **dict(zip(names, values, strict=True))})

    row("transcoding CPU per 20 ms frame pair", "µs", "≤ 15 and ≤ pipecat",
        [cpu_us_per_frame_pair(m, iterations) for m in makers])  # fmt: skip
    pcm24 = tone(1000, 24000, 1.0).astype("<i2").tobytes()
    ulaw = pcm16_to_ulaw(tone(1000, 8000, 1.0).astype(np.int16))
    click24 = np.zeros(24000)
    click24[12000:12024] = 20000 * np.hanning(24)
    click8 = np.zeros(8000)
    click8[4000:4008] = 20000 * np.hanning(8)
    down_delay, up_delay, held_down, held_up, tail, tail_flushed, sinad_down, sinad_up = ([] for _ in range(8))
    for make in makers:
        out, held = downlink_run(make, click24.astype("<i2").tobytes(), flush=False)
        down_delay.append(delay_ms(click24, ulaw_to_pcm16(out).astype(np.float64), 8000, 1 / 3))
        held_down.append(held)
        up, held = uplink_run(make, pcm16_to_ulaw(click8.astype(np.int16)))
        up_delay.append(delay_ms(click8, np.frombuffer(up, dtype="<i2").astype(np.float64), 16000, 2))
        held_up.append(held)
        out, _ = downlink_run(make, pcm24, flush=False)
        tail.append(1000 - len(out) / 8)
        flushed, _ = downlink_run(make, pcm24, flush=True)
        tail_flushed.append(max(0.0, 1000 - len(flushed) / 8))
        sinad_down.append(aligned_sinad(ulaw_to_pcm16(flushed).astype(np.float64), 1000, 8000))
        up, _ = uplink_run(make, ulaw)
        sinad_up.append(aligned_sinad(np.frombuffer(up, dtype="<i2").astype(np.float64), 1000, 16000))
    # Added delay = the filter's group delay + what a stream resampler holds back before releasing output.
    row("added delay, Gemini 24 kHz → caller", "ms", "≤ 8", [d + h for d, h in zip(down_delay, held_down, strict=True)])
    row("added delay, caller → Gemini 16 kHz", "ms", "≤ 8", [d + h for d, h in zip(up_delay, held_up, strict=True)])
    row("  of which held back (bursty output), downlink", "ms", "0", held_down)
    row("  of which held back (bursty output), uplink", "ms", "0", held_up)
    row("tail lost at turn end, no flush", "ms", "0", tail)
    row("tail lost at turn end, with flush", "ms", "0", tail_flushed)
    row("1 kHz tone SINAD, downlink (incl. mu-law)", "dB", "≥ 35", sinad_down)
    row("1 kHz tone SINAD, uplink (incl. mu-law)", "dB", "≥ 35", sinad_up)
    row("alias of a 6 kHz tone at 24 kHz", "dB", "≤ -60", [alias_rejection_db(m) for m in makers])
    row("uplink SNR vs ideal resampler", "dB", "≥ 40", [uplink_snr_db(m) for m in makers])
    return rows


if __name__ == "__main__":
    from bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
