"""Audio conversion for one call, sans-I/O: mu-law 8 kHz <-> PCM16 16 kHz (to Gemini) / 24 kHz (from Gemini).

- mu-law by lookup tables, bit-exact with the old stdlib `audioop` (removed in Python 3.13).
- Streaming polyphase windowed-sinc FIR resamplers that keep their state across chunks (per-chunk resampling
  clicks at every edge), anti-aliased (the 24k -> 8k decimator attenuates everything that would fold into
  300-3400 Hz by at least 99 dB, below what mu-law can carry), ~3 ms group delay each way, and output
  proportional to every input (no soxr-style bursts, nothing held back).
- Gemini chunks may have odd byte counts: the odd byte is carried to the next chunk. Output to Twilio is whole
  160-byte (20 ms) frames; `flush_caller()` emits the held-back tail at the end of a turn.

Two kernels run the same filters: the compiled `media_node._audiokernel` (C, built by `pip install`; the default,
several times faster) and the numpy code below (the fallback where no C compiler was found). Their outputs agree
within 1 LSB (tests/test_audio.py). Without the compiled kernel the first `CallAudio()` says so in one INFO line.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

BYTES_PER_SECOND = 8000  # mu-law at 8 kHz: one byte per sample
FRAME_BYTES = 160  # 20 ms of mu-law at 8 kHz
ULAW_SILENCE = 0xFF

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]

log = logging.getLogger(__name__)


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
ULAW_DECODE_F: FloatArray = ULAW_DECODE.astype(np.float64)


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


# The two filters, shared by both kernels. Group delay (taps - 1) / 2 at the higher rate: 2.97 ms and 2.98 ms.
UP_TAPS = lowpass(96, 3700.0, 16000.0) * 2  # x2 interpolator at 16 kHz; gain 2 makes up for the zero stuffing
DOWN_TAPS = lowpass(144, 3600.0, 24000.0)  # /3 decimator at 24 kHz
UPLINK_DELAY_MS = (len(UP_TAPS) - 1) / 2 / 16.0
DOWNLINK_DELAY_MS = (len(DOWN_TAPS) - 1) / 2 / 24.0
DOWN_PENDING_SAMPLES = len(DOWN_TAPS) // 2  # 24 kHz input still inside the filter at the end of a turn


class Resampler(Protocol):
    """One direction of one call: bytes in, bytes out, state kept between calls."""

    def process(self, data: bytes, /) -> bytes: ...


class NumpyUpsampler:
    """x2 polyphase interpolator: mu-law 8 kHz in, PCM16LE 16 kHz out (two samples per input sample)."""

    def __init__(self) -> None:
        self._even, self._odd = UP_TAPS[0::2].copy(), UP_TAPS[1::2].copy()
        self._hist: FloatArray = np.zeros(len(self._even) - 1)

    def process(self, ulaw: bytes, /) -> bytes:
        if not ulaw:
            return b""
        buf: FloatArray = np.concatenate((self._hist, ULAW_DECODE_F[np.frombuffer(ulaw, dtype=np.uint8)]))
        self._hist = buf[len(buf) - len(self._hist) :].copy()  # a view would keep all of buf
        out: FloatArray = np.empty(2 * len(ulaw))
        out[0::2] = np.convolve(buf, self._even, "valid")
        out[1::2] = np.convolve(buf, self._odd, "valid")
        np.clip(out, -32768.0, 32767.0, out=out)
        return bytes(np.rint(out, out=out).astype("<i2").tobytes())


class NumpyDecimator:
    """/3 polyphase decimator computing only the kept samples: PCM16LE 24 kHz (even length) in, mu-law 8 kHz out."""

    def __init__(self) -> None:
        self._hist: FloatArray = np.zeros(len(DOWN_TAPS) - 1)
        self._phase = 0  # how many input samples to skip before the next kept output

    def process(self, pcm24: bytes, /) -> bytes:
        if len(pcm24) % 2:
            raise ValueError("PCM16 input must have an even byte count")
        if not pcm24:
            return b""
        buf: FloatArray = np.concatenate((self._hist, np.frombuffer(pcm24, dtype="<i2")))
        self._hist = buf[len(buf) - len(self._hist) :].copy()  # a view would keep all of buf
        # One C-level convolution, then keep every third output on the global grid: cheaper in numpy than
        # three per-phase convolutions, whose Python overhead dominates at 20 ms chunk sizes.
        out: FloatArray = np.convolve(buf, DOWN_TAPS, "valid")[self._phase :: 3]
        self._phase = (self._phase - len(pcm24) // 2) % 3
        np.clip(out, -32768.0, 32767.0, out=out)
        return bytes(ULAW_ENCODE[np.rint(out, out=out).astype(np.int16).view(np.uint16)].tobytes())


@dataclass(frozen=True)
class Kernel:
    """A pair of resampler factories: what `CallAudio` runs on."""

    name: str
    upsampler: Callable[[], Resampler]
    decimator: Callable[[], Resampler]


NUMPY_KERNEL = Kernel("numpy", NumpyUpsampler, NumpyDecimator)


def _compiled_kernel() -> tuple[Kernel | None, str]:
    """The C kernel if it was built (and is this version), else None and why not."""
    try:
        from media_node import _audiokernel as ck
    except ImportError as exc:
        return None, f"not built ({str(exc)[:120]})"
    if getattr(ck, "KERNEL_VERSION", None) != 1:
        return None, "out of date (rebuild: pip install -e .)"
    ck.set_ulaw_tables(ULAW_DECODE_F.tobytes(), ULAW_ENCODE.tobytes())
    up = np.concatenate((UP_TAPS[0::2][::-1], UP_TAPS[1::2][::-1])).tobytes()  # correlation order
    down = np.concatenate([DOWN_TAPS[::-1][p::3] for p in range(3)]).tobytes()  # the three polyphase branches
    return Kernel("compiled", lambda: ck.Upsampler2(up), lambda: ck.Decimator3(down)), ""


COMPILED_KERNEL, _COMPILED_MISSING = _compiled_kernel()
DEFAULT_KERNEL = COMPILED_KERNEL or NUMPY_KERNEL


@functools.cache
def _say_fallback_once() -> None:
    log.info("audio: compiled kernel %s; using the numpy fallback (same output, more CPU)", _COMPILED_MISSING)


class CallAudio:
    """Both directions of one call. Not thread-safe; one instance per call."""

    def __init__(self, kernel: Kernel | None = None) -> None:
        if kernel is None and COMPILED_KERNEL is None:
            _say_fallback_once()
        self.kernel = kernel or DEFAULT_KERNEL
        self._up = self.kernel.upsampler()
        self._down = self.kernel.decimator()
        self._carry = b""
        self._pending = b""  # mu-law bytes short of a whole frame
        self._fed = False  # agent audio went in since the last flush/reset

    def caller_to_gemini(self, ulaw: bytes) -> bytes:
        """Any length of mu-law 8 kHz -> PCM16LE 16 kHz bytes (4 bytes out per byte in)."""
        return self._up.process(ulaw)

    def gemini_to_caller(self, pcm24: bytes) -> bytes:
        """Any bytes of PCM16LE 24 kHz (odd counts included) -> mu-law 8 kHz in whole 160-byte frames."""
        data = self._carry + pcm24 if self._carry else pcm24
        even = len(data) & ~1
        if not even:
            self._carry = data
            return b""
        self._carry = data[even:]
        self._fed = True
        ulaw = self._down.process(data[:even] if even < len(data) else data)
        if self._pending:
            ulaw = self._pending + ulaw
        whole = len(ulaw) - len(ulaw) % FRAME_BYTES
        self._pending = ulaw[whole:]
        return ulaw[:whole]

    def flush_caller(self) -> bytes:
        """End of the agent's turn: push the filter tail through and pad the last frame with silence."""
        if not self._fed:
            return b""
        tail = self._pending + self._down.process(bytes(2 * DOWN_PENDING_SAMPLES))
        self.reset_outbound()  # the next turn starts from silence
        if len(tail) % FRAME_BYTES:
            tail += bytes([ULAW_SILENCE]) * (FRAME_BYTES - len(tail) % FRAME_BYTES)
        return tail

    def reset_outbound(self) -> None:
        """Barge-in: drop every bit of agent audio not yet sent."""
        self._down = self.kernel.decimator()
        self._carry = b""
        self._pending = b""
        self._fed = False
