"""Audio conversion quality and correctness, on the sans-I/O code (no sockets, no timing)."""

from __future__ import annotations

import numpy as np
import pytest

from media_node.audio import (
    ULAW_DECODE,
    CallAudio,
    Resampler24kTo8k,
    Upsampler8kTo16k,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)


def tone(freq: float, rate: int, seconds: float, amplitude: float = 8000.0) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return amplitude * np.sin(2 * np.pi * freq * n / rate)


def sinad_db(signal: np.ndarray, reference: np.ndarray) -> float:
    """Best-fit the reference (gain) and report signal-to-(noise + distortion)."""
    gain = np.dot(signal, reference) / np.dot(reference, reference)
    error = signal - gain * reference
    return float(10 * np.log10(np.sum((gain * reference) ** 2) / np.sum(error**2)))


def ideal_tone(freq: float, rate: int, count: int, delay_s: float, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(count) / rate - delay_s
    return amplitude * np.sin(2 * np.pi * freq * t)


def test_ulaw_tables_match_g711() -> None:
    # Known G.711 points (as audioop.ulaw2lin / lin2ulaw): silence, full scale, and the sign bit.
    assert ULAW_DECODE[0xFF] == 0 and ULAW_DECODE[0x7F] == 0
    assert ULAW_DECODE[0x00] == -32124 and ULAW_DECODE[0x80] == 32124
    assert pcm16_to_ulaw(np.array([0, 32767, -32768, 1000, -1000], dtype=np.int16)) == bytes(
        [0xFF, 0x80, 0x00, 0xCE, 0x4E]
    )
    every_byte = bytes(range(256))  # decode -> encode is the identity for every code but the duplicate zero
    round_trip = pcm16_to_ulaw(ulaw_to_pcm16(every_byte))
    assert sum(a != b for a, b in zip(round_trip, every_byte, strict=True)) == 1  # 0x7F (-0) becomes 0xFF (+0)


def test_uplink_is_chunk_invariant_and_doubles_the_rate() -> None:
    ulaw = pcm16_to_ulaw(tone(440, 8000, 1.0).astype(np.int16))
    one = CallAudio().caller_to_gemini(ulaw)
    audio = CallAudio()
    framed = b"".join(audio.caller_to_gemini(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160))
    assert one == framed and len(one) == 4 * len(ulaw)


def test_downlink_any_chunking_gives_identical_whole_frames() -> None:
    pcm = tone(1000, 24000, 1.0).astype("<i2").tobytes()
    reference = CallAudio()
    whole = reference.gemini_to_caller(pcm) + reference.flush_caller()
    rng = np.random.default_rng(7)
    audio, frames, i = CallAudio(), [], 0
    while i < len(pcm):
        size = int(rng.integers(1, 2000))  # odd sizes included: the odd byte is carried
        frames.append(audio.gemini_to_caller(pcm[i : i + size]))
        i += size
    tail = audio.flush_caller()
    assert all(len(f) % 160 == 0 for f in frames) and len(tail) % 160 == 0
    assert b"".join(frames) + tail == whole


def test_flush_keeps_the_tail_and_is_empty_when_idle() -> None:
    audio = CallAudio()
    assert audio.flush_caller() == b""
    pcm = tone(500, 24000, 0.25).astype("<i2").tobytes()  # 250 ms -> 2000 mu-law bytes
    out = audio.gemini_to_caller(pcm) + audio.flush_caller()
    assert 2000 <= len(out) <= 2000 + 160 + 160  # all the audio, plus the filter tail, padded to a frame
    assert audio.flush_caller() == b""


def test_reset_outbound_is_a_fresh_start() -> None:
    pcm = tone(700, 24000, 0.2).astype("<i2").tobytes()
    used = CallAudio()
    used.gemini_to_caller(pcm[:1001])
    used.reset_outbound()
    assert used.gemini_to_caller(pcm) == CallAudio().gemini_to_caller(pcm)


def test_group_delay_is_under_8_ms_each_way() -> None:
    up, down = Upsampler8kTo16k(), Resampler24kTo8k()
    assert up.delay_ms <= 8 and down.delay_ms <= 8
    impulse = np.zeros(400)
    impulse[100] = 10000
    peak_up = int(np.argmax(up.process(impulse.astype(np.int16)))) / 2 - 100  # in 8 kHz samples
    assert abs(peak_up / 8 - up.delay_ms) < 0.2
    impulse24 = np.zeros(1200)
    impulse24[300] = 10000
    peak_down = int(np.argmax(down.process(impulse24))) * 3 - 300  # in 24 kHz samples
    assert abs(peak_down / 24 - down.delay_ms) < 0.2


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_full_path_tone_sinad_at_least_35_db(freq: float) -> None:
    # Downlink: Gemini 24 kHz -> mu-law 8 kHz, as the caller hears it.
    audio = CallAudio()
    sent = tone(freq, 24000, 1.0)
    out = audio.gemini_to_caller(sent.astype("<i2").tobytes()) + audio.flush_caller()
    heard = ulaw_to_pcm16(out).astype(np.float64)
    delay = Resampler24kTo8k().delay_ms / 1000
    ref = ideal_tone(freq, 8000, len(heard), delay)
    window = slice(400, 7600)
    assert sinad_db(heard[window], ref[window]) >= 35
    # Uplink: mu-law 8 kHz -> 16 kHz for Gemini.
    caller = pcm16_to_ulaw(tone(freq, 8000, 1.0).astype(np.int16))
    pcm16k = np.frombuffer(CallAudio().caller_to_gemini(caller), dtype="<i2").astype(np.float64)
    ref16 = ideal_tone(freq, 16000, len(pcm16k), Upsampler8kTo16k().delay_ms / 1000)
    assert sinad_db(pcm16k[800:15200], ref16[800:15200]) >= 35


@pytest.mark.parametrize("freq", [4500.0, 6000.0, 9000.0])
def test_out_of_band_tone_is_rejected_by_60_db(freq: float) -> None:
    """A 6 kHz tone at 24 kHz would fold to 2 kHz without an anti-alias filter."""
    down = Resampler24kTo8k()
    out = down.process(tone(freq, 24000, 1.0, amplitude=16000.0))[200:]
    rejection = 20 * np.log10(np.sqrt(np.mean(out**2)) / (16000 / np.sqrt(2)))
    assert rejection <= -60
