"""Audio conversion on the sans-I/O code (no sockets, no timing): quality, streaming properties, and the compiled
kernel against the numpy fallback (same output within 1 LSB, in practice exactly)."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.audio_bench import pcm16 as pcm  # the bench's own signals: what is measured there is tested here
from bench.audio_bench import tone
from media_node.audio import (
    COMPILED_KERNEL,
    DEFAULT_KERNEL,
    DOWN_TAPS,
    DOWNLINK_DELAY_MS,
    FRAME_BYTES,
    NUMPY_KERNEL,
    ULAW_DECODE,
    UP_TAPS,
    UPLINK_DELAY_MS,
    CallAudio,
    Kernel,
    NumpyDecimator,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

LEVELS = np.unique(ULAW_DECODE)  # the 255 distinct mu-law output levels, in order


def compiled() -> Kernel:
    if COMPILED_KERNEL is None:
        message = "COMPILED AUDIO KERNEL NOT BUILT (no C compiler or Python headers?): `pip install -e .` builds it"
        print(f"\n{'!' * 80}\n{message}\n{'!' * 80}")
        if os.environ.get("CI"):
            pytest.fail(message)  # in CI a silent skip would hide a broken build step
        pytest.skip(message)
    return COMPILED_KERNEL


@pytest.fixture(params=["compiled", "numpy"])
def kernel(request: pytest.FixtureRequest) -> Kernel:
    return compiled() if request.param == "compiled" else NUMPY_KERNEL


def ulaw(x: np.ndarray) -> bytes:
    return pcm16_to_ulaw(np.frombuffer(pcm(x), dtype="<i2"))


def sinad_db(y: np.ndarray, freq: float, rate: int) -> float:
    """Least-squares tone (any gain and phase) + DC over the steady part; everything else is noise + distortion."""
    body = y[rate // 5 : -rate // 5]
    n = np.arange(len(body))
    basis = np.stack([np.sin(2 * np.pi * freq * n / rate), np.cos(2 * np.pi * freq * n / rate), np.ones(len(n))], 1)
    coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
    fitted = basis[:, :2] @ coef[:2]
    return float(10 * np.log10(np.sum(fitted**2) / np.sum((body - fitted) ** 2)))


def response_db(taps: np.ndarray, rate: float, freqs: np.ndarray) -> np.ndarray:
    h = np.exp(-2j * np.pi * np.outer(freqs, np.arange(len(taps))) / rate) @ taps
    return np.asarray(20 * np.log10(np.abs(h) / taps.sum()))


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i = [], 0
    for size in sizes:
        out.append(data[i : i + size])
        i += size
    return [*out, data[i:]]


def assert_same_within_1_lsb(fast: bytes, slow: bytes, kind: str) -> None:
    """PCM16: every sample within 1; mu-law: the same or the adjacent level. And nearly all exactly equal, so a
    systematic difference (a rounding rule, an off-by-one sample) cannot hide inside the tolerance."""
    assert len(fast) == len(slow)
    if kind == "pcm":
        a = np.frombuffer(fast, dtype="<i2").astype(np.int32)
        b = np.frombuffer(slow, dtype="<i2").astype(np.int32)
    else:
        a = np.searchsorted(LEVELS, ulaw_to_pcm16(fast))
        b = np.searchsorted(LEVELS, ulaw_to_pcm16(slow))
    assert int(np.max(np.abs(a - b), initial=0)) <= 1
    assert np.count_nonzero(a != b) <= max(1, len(a) // 10_000)


# --- the compiled kernel is the default, and it is the numpy code ----------------------------------------------------
def test_compiled_kernel_is_built_and_the_default() -> None:
    assert DEFAULT_KERNEL is compiled()


SIGNALS = ["noise", "loud_noise", "tones", "silence"]


def signal(kind: str, rate: int, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    if kind == "noise":
        return rng.normal(0, 4000, n)
    if kind == "loud_noise":  # clips in the filters: the clip-then-round rule must match too
        return rng.normal(0, 30000, n)
    if kind == "tones":
        return sum(tone(f, rate, seconds, a) for f, a in [(301, 9000), (1004, 7000), (3397, 6000), (5501, 12000)])
    return np.zeros(n)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("up"), st.integers(0, 2600)),
        st.tuples(st.just("down"), st.integers(0, 7000)),  # odd byte counts and > one 1024-sample block
        st.tuples(st.sampled_from(["flush", "reset"]), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, kind=st.sampled_from(SIGNALS), seed=st.integers(0, 2**16))
def test_compiled_and_numpy_agree_over_any_chunking(ops: list[tuple[str, int]], kind: str, seed: int) -> None:
    fast, slow = CallAudio(compiled()), CallAudio(NUMPY_KERNEL)
    up_src, down_src = ulaw(signal(kind, 8000, 4.0, seed)), pcm(signal(kind, 24000, 4.0, seed + 1))
    up_at = down_at = 0
    ups: list[tuple[bytes, bytes]] = []
    downs: list[tuple[bytes, bytes]] = []
    for op, size in ops:
        if op == "up":
            chunk, up_at = up_src[up_at : up_at + size], up_at + size
            ups.append((fast.caller_to_gemini(chunk), slow.caller_to_gemini(chunk)))
        elif op == "down":
            chunk, down_at = down_src[down_at : down_at + size], down_at + size
            downs.append((fast.gemini_to_caller(chunk), slow.gemini_to_caller(chunk)))
        elif op == "flush":
            downs.append((fast.flush_caller(), slow.flush_caller()))
        else:
            fast.reset_outbound()
            slow.reset_outbound()
    assert all(len(a) == len(b) and len(a) % FRAME_BYTES == 0 for a, b in downs)  # frames line up, call by call
    assert all(len(a) == len(b) for a, b in ups)
    assert_same_within_1_lsb(b"".join(a for a, _ in ups), b"".join(b for _, b in ups), "pcm")
    assert_same_within_1_lsb(b"".join(a for a, _ in downs), b"".join(b for _, b in downs), "ulaw")


@pytest.mark.parametrize("kind", SIGNALS)
def test_compiled_and_numpy_agree_over_a_long_call(kind: str) -> None:
    """Two minutes of audio in real-call framing (20 ms up, 40 ms down, a flush every 2 s): no drift, no skew."""
    fast, slow = CallAudio(compiled()), CallAudio(NUMPY_KERNEL)
    up_src, down_src = ulaw(signal(kind, 8000, 120.0, 5)), pcm(signal(kind, 24000, 120.0, 6))
    fast_up = b"".join(fast.caller_to_gemini(f) for f in split(up_src, [160] * 5999))
    slow_up = b"".join(slow.caller_to_gemini(f) for f in split(up_src, [160] * 5999))
    assert len(fast_up) == 4 * len(up_src)
    assert_same_within_1_lsb(fast_up, slow_up, "pcm")
    fast_down, slow_down = [], []
    for i, chunk in enumerate(split(down_src, [1920] * 2999)):
        fast_down.append(fast.gemini_to_caller(chunk))
        slow_down.append(slow.gemini_to_caller(chunk))
        if i % 50 == 49:
            fast_down.append(fast.flush_caller())
            slow_down.append(slow.flush_caller())
    assert_same_within_1_lsb(b"".join(fast_down), b"".join(slow_down), "ulaw")


def test_compiled_kernel_rejects_bad_input_and_accepts_any_buffer() -> None:
    from media_node import _audiokernel as ck

    kernel = compiled()
    down, up = kernel.decimator(), kernel.upsampler()
    with pytest.raises(ValueError, match="even byte count"):
        down.process(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even byte count"):
        NumpyDecimator().process(b"\x00")
    with pytest.raises(TypeError):
        up.process("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        down.process(None)  # type: ignore[arg-type]
    for bad in (b"", b"\x00" * 8, b"\x00" * 20):  # too few taps, not a multiple of the branches
        with pytest.raises(ValueError, match="taps"):
            ck.Decimator3(bad)
    with pytest.raises(TypeError):
        ck.Upsampler2(taps=UP_TAPS.tobytes())  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="tables"):
        ck.set_ulaw_tables(b"\x00" * 100, b"\x00" * 65536)
    data = pcm(signal("noise", 24000, 0.1, 1))
    expected = kernel.decimator().process(data)
    assert kernel.decimator().process(bytearray(data)) == expected
    assert kernel.decimator().process(memoryview(data)) == expected
    assert up.process(b"") == b"" and down.process(b"") == b""


def test_memory_per_call_stays_bounded_whatever_the_chunk_size(kernel: Kernel) -> None:
    """A 10 s chunk in one piece (a hostile or buggy peer) must not grow what a call keeps."""
    big_up, big_down = ulaw(signal("noise", 8000, 10.0, 2)), pcm(signal("noise", 24000, 10.0, 3))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        audio = CallAudio(kernel)
        for _ in range(3):
            del_up = audio.caller_to_gemini(big_up)
            del_down = audio.gemini_to_caller(big_down)
            assert len(del_up) == 4 * len(big_up) and len(del_down) == 80_000
            del del_up, del_down
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 80_000, f"{kept} bytes kept by one call's audio state"


@pytest.mark.parametrize(("module", "reason"), [("None", "not built"), ("stale", "out of date")])
def test_without_the_compiled_kernel_one_info_line_and_the_numpy_path(module: str, reason: str) -> None:
    script = f"""
import logging, sys, types
fake = types.ModuleType("media_node._audiokernel")
fake.KERNEL_VERSION = 0
sys.modules["media_node._audiokernel"] = None if {module!r} == "None" else fake
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
from media_node.audio import CallAudio, DEFAULT_KERNEL, NUMPY_KERNEL
assert DEFAULT_KERNEL is NUMPY_KERNEL
calls = [CallAudio() for _ in range(3)]
assert len(calls[0].caller_to_gemini(b"\\xff" * 160)) == 640
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("INFO media_node.audio ")
    assert reason in lines[0] and "numpy fallback" in lines[0]


# --- properties of the conversion, on both kernels --------------------------------------------------------------------
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


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 2600), max_size=30), which=st.sampled_from(["compiled", "numpy"]))
def test_uplink_is_chunk_invariant_and_doubles_the_rate(sizes: list[int], which: str) -> None:
    kernel = compiled() if which == "compiled" else NUMPY_KERNEL
    src = ulaw(signal("tones", 8000, 2.0, 0))
    whole = CallAudio(kernel).caller_to_gemini(src)
    audio = CallAudio(kernel)
    assert b"".join(audio.caller_to_gemini(c) for c in split(src, sizes)) == whole and len(whole) == 4 * len(src)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 7000), max_size=30), which=st.sampled_from(["compiled", "numpy"]))
def test_downlink_any_chunking_gives_identical_whole_frames(sizes: list[int], which: str) -> None:
    kernel = compiled() if which == "compiled" else NUMPY_KERNEL
    src = pcm(signal("tones", 24000, 2.0, 0))
    reference = CallAudio(kernel)
    whole = reference.gemini_to_caller(src) + reference.flush_caller()
    audio = CallAudio(kernel)
    frames = [audio.gemini_to_caller(c) for c in split(src, sizes)]  # odd sizes: the odd byte is carried
    tail = audio.flush_caller()
    assert all(len(f) % FRAME_BYTES == 0 for f in frames) and len(tail) % FRAME_BYTES == 0
    assert b"".join(frames) + tail == whole


def test_odd_bytes_one_at_a_time(kernel: Kernel) -> None:
    src = pcm(tone(700, 24000, 0.1))
    whole = CallAudio(kernel)
    audio = CallAudio(kernel)
    assert b"".join(audio.gemini_to_caller(src[i : i + 1]) for i in range(len(src))) == whole.gemini_to_caller(src)
    assert audio.flush_caller() == whole.flush_caller()


def test_flush_keeps_the_tail_and_is_empty_when_idle(kernel: Kernel) -> None:
    audio = CallAudio(kernel)
    assert audio.flush_caller() == b""
    audio.gemini_to_caller(b"\x01")  # a lone odd byte is no audio yet
    assert audio.flush_caller() == b""
    src = pcm(tone(500, 24000, 0.25))  # 250 ms -> 2000 mu-law bytes, plus 3 ms of filter tail
    out = audio.gemini_to_caller(src) + audio.flush_caller()
    assert len(out) == 2080  # 2000 + 24 bytes of filter tail, padded to a whole frame with silence
    assert out[2024:] == bytes([0xFF]) * 56
    assert audio.flush_caller() == b""


def test_reset_outbound_is_a_fresh_start(kernel: Kernel) -> None:
    src = pcm(tone(700, 24000, 0.2))
    used = CallAudio(kernel)
    used.gemini_to_caller(src[:1001])  # leaves an odd byte, pending frame bytes and filter history
    used.reset_outbound()
    fresh = CallAudio(kernel)
    assert used.gemini_to_caller(src) == fresh.gemini_to_caller(src)
    assert used.flush_caller() == fresh.flush_caller()


def test_group_delay_is_3_ms_each_way(kernel: Kernel) -> None:
    assert UPLINK_DELAY_MS <= 3.0 and DOWNLINK_DELAY_MS <= 3.0
    impulse8 = np.zeros(400)
    impulse8[100] = 20000
    up = np.frombuffer(CallAudio(kernel).caller_to_gemini(ulaw(impulse8)), dtype="<i2")
    assert abs((int(np.argmax(up)) / 2 - 100) / 8 - UPLINK_DELAY_MS) < 0.1
    impulse24 = np.zeros(1200)
    impulse24[300] = 30000
    audio = CallAudio(kernel)
    down = ulaw_to_pcm16(audio.gemini_to_caller(pcm(impulse24)) + audio.flush_caller())
    assert abs((int(np.argmax(down)) * 3 - 300) / 24 - DOWNLINK_DELAY_MS) < 0.1


@pytest.mark.parametrize("freq", [301.0, 1004.0, 2203.0, 3397.0])  # no factor shared with 8/16/24 kHz
def test_tone_sinad_is_within_1_5_db_of_mu_law_alone(kernel: Kernel, freq: float) -> None:
    ceiling = sinad_db(ulaw_to_pcm16(ulaw(tone(freq, 8000, 1.5))).astype(np.float64), freq, 8000)
    assert ceiling > 38  # G.711 at -12 dBFS, for scale
    audio = CallAudio(kernel)  # downlink: Gemini 24 kHz -> mu-law 8 kHz, as the caller hears it
    heard = ulaw_to_pcm16(audio.gemini_to_caller(pcm(tone(freq, 24000, 1.5))) + audio.flush_caller())
    assert sinad_db(heard.astype(np.float64), freq, 8000) >= ceiling - 1.5
    sent = CallAudio(kernel).caller_to_gemini(ulaw(tone(freq, 8000, 1.5)))  # uplink: mu-law 8 kHz -> 16 kHz
    assert sinad_db(np.frombuffer(sent, dtype="<i2").astype(np.float64), freq, 16000) >= ceiling - 1.5


@pytest.mark.parametrize("freq", [4601, 6007, 9011, 11399])
def test_full_scale_tones_that_would_fold_into_the_band_reach_the_caller_90_db_down(kernel: Kernel, freq: int) -> None:
    """Without an anti-alias filter these fold to 3399, 1993, 1011 and 3399 Hz at full level (audioop does).
    What reaches the caller is the input's own rounding noise (G.711 turns -1 into -8), not the folded tone."""
    audio = CallAudio(kernel)
    out = audio.gemini_to_caller(pcm(tone(freq, 24000, 1.0, 32000.0, ramp_s=0.05))) + audio.flush_caller()
    heard = ulaw_to_pcm16(out).astype(np.float64)
    folded, n = abs(freq - 8000 * round(freq / 8000)), np.arange(len(heard))
    basis = np.stack([np.sin(2 * np.pi * folded * n / 8000), np.cos(2 * np.pi * folded * n / 8000)], 1)
    coef, *_ = np.linalg.lstsq(basis, heard, rcond=None)
    assert len(out) >= 8000 and 20 * np.log10(np.hypot(*coef) / 32000.0) <= -90


def test_filters_reject_what_would_fold_or_image_into_the_band_by_95_db() -> None:
    stop_down = np.arange(4600.0, 12001.0, 5.0)  # 24 kHz -> 8 kHz: these fold into 300-3400 Hz
    assert response_db(DOWN_TAPS, 24000.0, stop_down).max() <= -95
    images_up = np.arange(4600.0, 8001.0, 5.0)  # 8 kHz -> 16 kHz: the images of 300-3400 Hz
    assert response_db(UP_TAPS, 16000.0, images_up).max() <= -95
    band = np.arange(300.0, 3401.0, 10.0)
    for taps, rate in ((DOWN_TAPS, 24000.0), (UP_TAPS, 16000.0)):
        assert response_db(taps, rate, band).min() >= -1.0 and response_db(taps, rate, band).max() <= 0.01
