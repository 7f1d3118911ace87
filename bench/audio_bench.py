"""Transcoding cost, delay and quality: ours vs pipecat 1.x (soxr stream resampler) vs audioop ratecv.

    bench/.venv/bin/python -m bench.audio_bench [--quick]

Every method gets the chunks a call produces: 160 B mu-law from Twilio (-> PCM16 16 kHz for Gemini), 960 B PCM16
24 kHz from Gemini (-> mu-law 8 kHz for Twilio), state kept across chunks for all three. How each figure is taken:
- CPU: the best of 7 runs of N frame pairs (timeit's rule: the others were disturbed), one core, all in-process.
  pipecat's coroutines are driven without an event loop (they never suspend), so loop overhead is not billed to it.
- SINAD: a tone whose frequency shares no factor with 8/16/24 kHz (1004 Hz, ITU-T O.132; the sweep uses integer
  Hz that are odd and not multiples of 3 or 5), so mu-law's error cannot repeat in step with the tone and hide in
  its harmonics. Least-squares fit of the tone (any gain, any phase) over 1.2 s of steady output; all else counts.
- Alias: -1 dBFS tones at 4.6-11.4 kHz (24 kHz in), which fold into the 300-3400 Hz band at 8 kHz; the folded
  tone's level is read by the same fit. The floor is measured on the same path: the weakest tone at the folded
  frequency that it still reproduces (bisection). Below that the path outputs nothing to read: "< floor".
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np

from media_node.audio import DEFAULT_KERNEL, NUMPY_KERNEL, CallAudio, Kernel, pcm16_to_ulaw, ulaw_to_pcm16

try:
    with warnings.catch_warnings():  # deprecated in 3.11-3.12: measured here, not used by the product
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # stdlib before Python 3.13; audioop-lts after
except ImportError:  # pragma: no cover
    audioop = None  # type: ignore[assignment]

ALIAS_LEVEL = 32767 * 10 ** (-1 / 20)  # -1 dBFS
TONE_LEVEL = 8000.0  # about -12 dBFS, speech level


# --- the three transcoders, behind one shape: up(ulaw) -> pcm16k, down(pcm24) -> ulaw, flush() -> ulaw ---------
class Ours:
    name = "ours"

    def __init__(self, kernel: Kernel = DEFAULT_KERNEL) -> None:
        self.audio = CallAudio(kernel)
        self.up, self.down = self.audio.caller_to_gemini, self.audio.gemini_to_caller
        self.flush = self.audio.flush_caller


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


def run_sync(coro: Coroutine[Any, Any, bytes]) -> bytes:
    """Run a coroutine that never suspends, as `await` inside a running loop would, minus the loop."""
    try:
        coro.send(None)
    except StopIteration as done:
        return bytes(done.value)
    raise RuntimeError("the coroutine suspended")


class Pipecat:
    """pipecat's own Twilio path: pipecat.audio.utils ulaw_to_pcm / pcm_to_ulaw with SOXRStreamAudioResampler."""

    name = "pipecat"

    def __init__(self) -> None:
        from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
        from pipecat.audio.utils import pcm_to_ulaw, ulaw_to_pcm

        self.in_resampler, self.out_resampler = SOXRStreamAudioResampler(), SOXRStreamAudioResampler()
        self._ulaw_to_pcm, self._pcm_to_ulaw = ulaw_to_pcm, pcm_to_ulaw

    def up(self, ulaw: bytes) -> bytes:
        return run_sync(self._ulaw_to_pcm(ulaw, 8000, 16000, self.in_resampler))

    def down(self, pcm24: bytes) -> bytes:
        return run_sync(self._pcm_to_ulaw(pcm24, 24000, 8000, self.out_resampler))

    def flush(self) -> bytes:
        return b""


def transcoders() -> list[Callable[[], Any]]:
    makers: list[Callable[[], Any]] = [Ours]
    try:
        import pipecat  # noqa: F401

        makers.append(Pipecat)
    except ImportError:
        print("pipecat is not installed (bench/.venv): its column stays empty", file=sys.stderr)
    if audioop is not None:
        makers.append(AudioopRatecv)
    return makers


# --- signals and runs ---------------------------------------------------------------------------------------------
def tone(freq: float, rate: int, seconds: float, amplitude: float = TONE_LEVEL, ramp_s: float = 0.0) -> np.ndarray:
    """A sine, optionally faded in and out (raised cosine) so its onset is no broadband click."""
    x = amplitude * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)
    ramp = int(rate * ramp_s)
    if ramp:
        fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        x[:ramp] *= fade
        x[len(x) - ramp :] *= fade[::-1]
    return x


def pcm16(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def coprime_hz(target: float) -> int:
    """The integer Hz nearest `target` that shares no factor with 8, 16 and 24 kHz (odd, not a multiple of 3 or 5)."""
    return min((f for f in range(int(target) - 8, int(target) + 9) if f % 2 and f % 3 and f % 5),
               key=lambda f: (abs(f - target), f))  # fmt: skip


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


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


def downlink_out(make: Callable[[], Any], x24: np.ndarray) -> np.ndarray:
    return ulaw_to_pcm16(downlink_run(make, pcm16(x24), flush=True)[0]).astype(np.float64)


def uplink_out(make: Callable[[], Any], x8: np.ndarray) -> np.ndarray:
    out = uplink_run(make, pcm16_to_ulaw(np.frombuffer(pcm16(x8), dtype="<i2")))[0]
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


# --- measurements ---------------------------------------------------------------------------------------------------
def fit_tone(y: np.ndarray, freq: float, rate: int) -> tuple[float, float, float]:
    """Least-squares sinusoid (+ DC) at `freq` over 0.4-1.6 s of `y`: (amplitude, fitted power, residual power)."""
    body = y[int(0.4 * rate) : int(1.6 * rate)]
    n = np.arange(len(body))
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate), np.ones(len(n))], 1)
    coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
    fitted = basis[:, :2] @ coef[:2]
    return float(np.hypot(coef[0], coef[1])), float(np.mean(fitted**2)), float(np.mean((body - fitted) ** 2))


def sinad_db(y: np.ndarray, freq: float, rate: int) -> float:
    _, signal, rest = fit_tone(y, freq, rate)
    return float(10 * np.log10(signal / rest)) if rest > 0 else float("inf")


def sinad_down(make: Callable[[], Any], freq: float) -> float:
    return sinad_db(downlink_out(make, tone(freq, 24000, 2.0, TONE_LEVEL)), freq, 8000)


def sinad_up(make: Callable[[], Any], freq: float) -> float:
    return sinad_db(uplink_out(make, tone(freq, 8000, 2.0, TONE_LEVEL)), freq, 16000)


def ulaw_alone_sinad(freq: float) -> float:
    """The ceiling: the same tone, only mu-law encoded and decoded at 8 kHz."""
    x = np.frombuffer(pcm16(tone(freq, 8000, 2.0, TONE_LEVEL)), dtype="<i2")
    return sinad_db(ulaw_to_pcm16(pcm16_to_ulaw(x)).astype(np.float64), freq, 8000)


def folded_hz(freq: int) -> int:
    return abs(freq - 8000 * round(freq / 8000))


def alias_db(make: Callable[[], Any], freq: int) -> float:
    """Level of the folded tone at the caller, relative to the -1 dBFS tone sent at `freq` (24 kHz)."""
    amplitude = fit_tone(downlink_out(make, tone(freq, 24000, 2.0, ALIAS_LEVEL, 0.05)), folded_hz(freq), 8000)[0]
    return float(20 * np.log10(amplitude / ALIAS_LEVEL)) if amplitude > 0 else float("-inf")


def floor_db(make: Callable[[], Any], freq: int, steps: int = 12) -> float:
    """The weakest in-band tone at `freq` (8 kHz out) this path still reproduces within 6 dB, relative to -1 dBFS."""

    def shown(level: float) -> bool:
        return fit_tone(downlink_out(make, tone(freq, 24000, 2.0, level, 0.05)), freq, 8000)[0] >= level / 2

    lo, hi = 0.25, 256.0  # not shown / shown (checked): bisect in log space
    if shown(lo) or not shown(hi):
        raise RuntimeError(f"floor outside {lo}..{hi} at {freq} Hz")
    for _ in range(steps):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (lo, mid) if shown(mid) else (mid, hi)
    return float(20 * np.log10(hi / ALIAS_LEVEL))


def alias_figure(make: Callable[[], Any], probes: list[int]) -> str | float:
    """The worst folded level over the probes, or '< floor' when none rises above the path's measured floor."""
    readings = [(alias_db(make, f), floor_db(make, folded_hz(f))) for f in probes]
    above = [level for level, floor in readings if level > floor]
    if above:
        return max(above)
    return f"< {max(floor for _, floor in readings):.0f} dB (floor)".replace("-", "−")


def cpu_us_per_frame_pair(make: Callable[[], Any], iterations: int) -> float:
    t = make()
    ulaw = pcm16_to_ulaw(np.frombuffer(pcm16(tone(1004, 8000, 0.02, TONE_LEVEL)), dtype="<i2"))
    pcm24 = pcm16(tone(1004, 24000, 0.02, TONE_LEVEL))
    for _ in range(200):
        t.up(ulaw), t.down(pcm24)
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter_ns()
        for _ in range(iterations):
            t.up(ulaw)
            t.down(pcm24)
        best = min(best, (time.perf_counter_ns() - started) / iterations / 1000)
    return best


def delay_ms(signal_in: np.ndarray, signal_out: np.ndarray, rate_out: int, ratio: float) -> float:
    """Lag of the output against the input (resampled by index), by cross-correlation peak."""
    n = min(len(signal_out), int(len(signal_in) * ratio))
    ref = np.interp(np.arange(n) / ratio, np.arange(len(signal_in)), signal_in)
    corr = np.correlate(signal_out[:n], ref[: n - 400], "valid")
    return float(np.argmax(corr) / rate_out * 1000)


def ideal_upsample(x: np.ndarray, delay_samples16: float) -> np.ndarray:
    """Band-limited x2 interpolation by FFT, shifted by the method's own delay (so only error remains)."""
    spectrum = np.fft.rfft(x)
    n_out = 2 * len(x)
    padded = np.zeros(n_out // 2 + 1, dtype=complex)
    padded[: len(spectrum)] = spectrum
    padded *= np.exp(-2j * np.pi * np.arange(len(padded)) / n_out * delay_samples16)
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
        ref = ideal_upsample(decoded, lag)[: len(out)][body]
        gain = np.dot(out[body], ref) / np.dot(ref, ref)
        return float(10 * np.log10(np.sum((gain * ref) ** 2) / np.sum((out[body] - gain * ref) ** 2)))

    lag = max(np.arange(0, 200, 0.5), key=snr)  # coarse, then refine the fractional delay
    for step in (0.1, 0.02, 0.004):
        lag = max(np.arange(lag - 5 * step, lag + 5 * step, step), key=snr)
    return snr(lag)


def run(quick: bool = False) -> list[dict[str, Any]]:
    makers = transcoders()
    names = [m().name for m in makers]
    rows: list[dict[str, Any]] = []

    def row(figure: str, unit: str, target: str, values: list[Any]) -> None:
        rows.append({"figure": figure, "unit": unit, "target": target, **dict(zip(names, values, strict=True))})

    iterations = 300 if quick else 3000
    row(f"transcoding CPU per 20 ms frame pair (ours: default path, {DEFAULT_KERNEL.name})", "µs", "≤ 8",
        [cpu_us_per_frame_pair(m, iterations) for m in makers])  # fmt: skip
    rows.append({"figure": "transcoding CPU per 20 ms frame pair, ours on the numpy fallback", "unit": "µs",
                 "ours": cpu_us_per_frame_pair(lambda: Ours(NUMPY_KERNEL), iterations)})  # fmt: skip

    click24 = np.zeros(24000)
    click24[12000:12024] = 20000 * np.hanning(24)
    click8 = np.zeros(8000)
    click8[4000:4008] = 20000 * np.hanning(8)
    pcm24 = pcm16(tone(1004, 24000, 1.0, TONE_LEVEL))
    down_delay, up_delay, held_down, held_up, tail, tail_flushed = ([] for _ in range(6))
    for make in makers:
        out, held = downlink_run(make, pcm16(click24), flush=False)
        down_delay.append(delay_ms(click24, ulaw_to_pcm16(out).astype(np.float64), 8000, 1 / 3))
        held_down.append(held)
        up, held = uplink_run(make, pcm16_to_ulaw(click8.astype(np.int16)))
        up_delay.append(delay_ms(click8, np.frombuffer(up, dtype="<i2").astype(np.float64), 16000, 2))
        held_up.append(held)
        tail.append(1000 - len(downlink_run(make, pcm24, flush=False)[0]) / 8)
        tail_flushed.append(max(0.0, 1000 - len(downlink_run(make, pcm24, flush=True)[0]) / 8))
    # Added delay = the filter's group delay + what a stream resampler holds back before releasing output.
    row("added delay, Gemini 24 kHz → caller", "ms", "≤ 8", [d + h for d, h in zip(down_delay, held_down, strict=True)])
    row("added delay, caller → Gemini 16 kHz", "ms", "≤ 8", [d + h for d, h in zip(up_delay, held_up, strict=True)])
    row("  of which held back (bursty output), downlink", "ms", "0", held_down)
    row("  of which held back (bursty output), uplink", "ms", "0", held_up)
    row("tail lost at turn end, no flush", "ms", "0", tail)
    row("tail lost at turn end, with flush", "ms", "0", tail_flushed)

    ceiling = ulaw_alone_sinad(1004)
    row("SINAD 1004 Hz −12 dBFS, downlink (incl. μ-law)", "dB", f"≥ 35 (μ-law alone {ceiling:.1f})",
        [sinad_down(m, 1004) for m in makers])  # fmt: skip
    row("SINAD 1004 Hz −12 dBFS, uplink (incl. caller's μ-law)", "dB", f"≥ 35 (μ-law alone {ceiling:.1f})",
        [sinad_up(m, 1004) for m in makers])  # fmt: skip
    sweep = [coprime_hz(f) for f in np.linspace(303, 3397, 8 if quick else 24)]  # 301 ... 3397 Hz
    sweep_ceiling = min(ulaw_alone_sinad(f) for f in sweep)
    label = f"SINAD sweep 300–3400 Hz, worst of {len(sweep)} tones"
    row(f"{label}, downlink", "dB", f"≥ 35 (μ-law alone {sweep_ceiling:.1f})",
        [min(sinad_down(m, f) for f in sweep) for m in makers])  # fmt: skip
    row(f"{label}, uplink", "dB", f"≥ 35 (μ-law alone {sweep_ceiling:.1f})",
        [min(sinad_up(m, f) for f in sweep) for m in makers])  # fmt: skip
    side = np.linspace(303, 3397, 2 if quick else 5)  # folded frequencies; each comes from 8 kHz - f and 8 kHz + f
    probes = [coprime_hz(8000 + sign * f) for sign in (-1, 1) for f in side]
    row(f"alias: −1 dBFS tones 4.6–11.4 kHz folded into 300–3400 Hz, worst of {len(probes)}", "dB", "≤ −60",
        [alias_figure(m, probes) for m in makers])  # fmt: skip
    row("uplink SNR vs ideal resampler", "dB", "≥ 40", [uplink_snr_db(m) for m in makers])
    return rows


if __name__ == "__main__":
    from bench.run import table

    print(table(run(quick="--quick" in sys.argv)))
