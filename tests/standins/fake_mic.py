"""A fake microphone for Chromium (`--use-file-for-fake-audio-capture=<wav>`), and the check that it arrived.

The signal is speech-like but exactly known: phone-band noise (300-3400 Hz, fixed seed) in syllable-length bursts
with short pauses, 16 kHz mono PCM16. Noise has a sharp autocorrelation, so `best_correlation()` finds the lag
between what the Gemini stand-in received and the file unambiguously (Chromium loops the file).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 16000


def speech_like(seconds: float = 4.0, seed: int = 7) -> np.ndarray:
    """Float samples in [-1, 1] at 16 kHz."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    noise = np.fft.irfft(spectrum, n)
    envelope = np.zeros(n)
    at = int(0.05 * RATE)
    while at < n:
        length = int(rng.uniform(0.15, 0.3) * RATE)
        ramp = np.hanning(length)
        envelope[at : at + length] = ramp[: max(0, min(length, n - at))]
        at += length + int(rng.uniform(0.05, 0.15) * RATE)
    signal = noise * envelope
    return 0.35 * signal / np.max(np.abs(signal))


def write_wav(path: Path, samples: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def best_correlation(received_pcm16: bytes, reference: np.ndarray, window_s: float = 1.5) -> tuple[float, int]:
    """(Pearson correlation at the best lag, that lag in samples) of `window_s` of received audio vs the looped file.

    The window is taken where the received audio is loudest, so leading silence (before the page's stream was
    connected) does not count against it.
    """
    received = np.frombuffer(received_pcm16, dtype="<i2").astype(np.float64) / 32768
    size = int(window_s * RATE)
    if len(received) < size:
        return 0.0, 0
    energy = np.convolve(received**2, np.ones(size), "valid")
    start = int(np.argmax(energy[:: RATE // 10]) * (RATE // 10))
    window = received[start : start + size]
    looped = np.tile(reference, int(np.ceil((size + len(reference)) / len(reference))) + 1)
    span = len(reference) + size
    n = 1 << int(np.ceil(np.log2(span + size)))
    cross = np.fft.irfft(np.fft.rfft(looped[:span], n) * np.conj(np.fft.rfft(window, n)), n)[: len(reference)]
    lag = int(np.argmax(cross))
    segment = looped[lag : lag + size]
    return float(np.corrcoef(segment, window)[0, 1]), lag
