"""Audio conversion for one call, sans-I/O: mu-law 8 kHz <-> PCM16 16 kHz (to Gemini) / 24 kHz (from Gemini).

- mu-law by lookup tables, bit-exact with the old stdlib `audioop` (removed in Python 3.13).
- Streaming polyphase windowed-sinc FIR resamplers that keep their state across chunks (per-chunk resampling
  clicks at every edge), anti-aliased (the 24k -> 8k decimator rejects a 6 kHz tone by far more than 60 dB),
  ~6 ms group delay, and output proportional to every input (no soxr-style bursts).
- Gemini chunks may have odd byte counts: the odd byte is carried to the next chunk. Output to Twilio is whole
  160-byte (20 ms) frames; `flush_caller()` emits the held-back tail at the end of a turn.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz
ULAW_SILENCE = 0xFF

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]


def _ulaw_decode_table() -> Int16Array:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(-32768, 32768, dtype=np.int32) >> 2  # 14-bit magnitude, as G.711
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(pcm), 8159) + 33
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    val = np.where(seg > 7, 0x7F, (seg << 4) | ((mag >> (seg + 1)) & 0x0F))
    table = np.empty(65536, dtype=np.uint8)
    table[np.arange(-32768, 32768) & 0xFFFF] = (val ^ mask) & 0xFF
    return table


ULAW_DECODE = _ulaw_decode_table()
ULAW_ENCODE = _ulaw_encode_table()


def ulaw_to_pcm16(data: bytes) -> Int16Array:
    return ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(samples: npt.NDArray[np.int16]) -> bytes:
    return bytes(ULAW_ENCODE[samples.astype(np.int16, copy=False).view(np.uint16)].tobytes())


def lowpass(taps: int, cutoff_hz: float, rate_hz: float, beta: float = 9.0) -> FloatArray:
    """Kaiser-windowed sinc, DC gain 1."""
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff_hz / rate_hz * np.sinc(2 * cutoff_hz / rate_hz * n) * np.kaiser(taps, beta)
    result: FloatArray = h / h.sum()
    return result


def to_int16(y: FloatArray) -> Int16Array:
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


class Upsampler8kTo16k:
    """x2 polyphase interpolator: every input sample yields exactly two output samples."""

    def __init__(self, taps: int = 96, cutoff_hz: float = 3700.0) -> None:
        taps += taps % 2
        h = lowpass(taps, cutoff_hz, 16000.0) * 2
        self._even, self._odd = h[0::2].copy(), h[1::2].copy()
        self._k = taps // 2
        self._hist: FloatArray = np.zeros(self._k - 1)
        self.delay_ms = (taps - 1) / 2 / 16.0

    def process(self, pcm8k: Int16Array) -> FloatArray:
        if len(pcm8k) == 0:
            return np.zeros(0)
        buf: FloatArray = np.concatenate((self._hist, pcm8k.astype(np.float64)))
        self._hist = buf[len(buf) - (self._k - 1) :]
        out: FloatArray = np.empty(2 * len(pcm8k))
        out[0::2] = np.convolve(buf, self._even, "valid")
        out[1::2] = np.convolve(buf, self._odd, "valid")
        return out


class Resampler24kTo8k:
    """/3 polyphase decimator computing only the kept samples; any input length, state kept."""

    def __init__(self, taps: int = 144, cutoff_hz: float = 3600.0) -> None:
        taps += (-taps) % 3
        h = lowpass(taps, cutoff_hz, 24000.0)
        self._phases = [h[p::3].copy() for p in range(3)]
        self._n = taps
        self._hist: FloatArray = np.zeros(taps - 1)
        self._phase = 0  # how many input samples to skip before the next kept output
        self.delay_ms = (taps - 1) / 2 / 24.0

    def process(self, pcm24k: npt.NDArray[np.int16] | FloatArray) -> FloatArray:
        if len(pcm24k) == 0:
            return np.zeros(0)
        buf: FloatArray = np.concatenate((self._hist, np.asarray(pcm24k, dtype=np.float64)))
        self._hist = buf[len(buf) - (self._n - 1) :]
        # Output j uses buf[start + 3j - i] * h[i]; split h by phase so each phase is a short convolution
        # over a stride-3 view (only kept samples are computed).
        start = self._n - 1 + self._phase
        n_out = max(0, (len(buf) - start + 2) // 3)
        self._phase = (self._phase - len(pcm24k)) % 3
        out: FloatArray = np.zeros(n_out)
        if n_out:
            k = self._n // 3
            for p, hp in enumerate(self._phases):
                lo = start - p - (k - 1) * 3
                out += np.convolve(buf[lo : start - p + (n_out - 1) * 3 + 1 : 3], hp, "valid")
        return out

    def pending_samples(self) -> int:
        """Input samples (at 24 kHz) still inside the filter whose output would need future input."""
        return self._n // 2


class CallAudio:
    """Both directions of one call. Not thread-safe; one instance per call."""

    def __init__(self) -> None:
        self._up = Upsampler8kTo16k()
        self._down = Resampler24kTo8k()
        self._carry = b""
        self._pending = bytearray()

    def caller_to_gemini(self, ulaw: bytes) -> bytes:
        """Any length of mu-law 8 kHz -> PCM16LE 16 kHz bytes (4 bytes out per byte in)."""
        return bytes(to_int16(self._up.process(ulaw_to_pcm16(ulaw))).astype("<i2").tobytes())

    def gemini_to_caller(self, pcm24: bytes) -> list[bytes]:
        """Any bytes of PCM16LE 24 kHz (odd counts included) -> whole 160-byte mu-law frames."""
        data = self._carry + pcm24
        even = len(data) & ~1
        self._carry = data[even:]
        if even:
            samples = np.frombuffer(data[:even], dtype="<i2")
            self._pending.extend(pcm16_to_ulaw(to_int16(self._down.process(samples))))
        return self._frames()

    def flush_caller(self) -> bytes:
        """End of the agent's turn: push the filter tail through and pad the last frame with silence."""
        if not self._pending and not self._fed_since_flush():
            return b""
        tail = self._down.process(np.zeros(self._down.pending_samples()))
        self._pending.extend(pcm16_to_ulaw(to_int16(tail)))
        self._carry = b""
        if len(self._pending) % FRAME_BYTES:
            self._pending.extend(bytes([ULAW_SILENCE]) * (FRAME_BYTES - len(self._pending) % FRAME_BYTES))
        out = bytes(self._pending)
        self._pending.clear()
        self._down = Resampler24kTo8k()  # the tail is out; the next turn starts from silence
        return out

    def reset_outbound(self) -> None:
        """Barge-in: drop every bit of agent audio not yet sent."""
        self._down = Resampler24kTo8k()
        self._carry = b""
        self._pending = bytearray()

    def _fed_since_flush(self) -> bool:
        return bool(np.any(self._down._hist))

    def _frames(self) -> list[bytes]:
        n = len(self._pending) // FRAME_BYTES * FRAME_BYTES
        if not n:
            return []
        frames = [bytes(self._pending[i : i + FRAME_BYTES]) for i in range(0, n, FRAME_BYTES)]
        del self._pending[:n]
        return frames
