"""ASCII-only number parsing: what every number field from the wire goes through."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from call_state.numbers import ascii_int


def test_ascii_digits_only() -> None:
    assert ascii_int("0") == 0 and ascii_int("12345") == 12345 and ascii_int(7) == 7
    for bad in (
        "²",
        "١٢٣",
        "12²",
        "",
        " 1",
        "1 ",
        "-1",
        "+1",
        "1e3",
        "0x10",
        "1_000",
        "1.5",
        "9" * 19,
        None,
        True,
        -3,
        1.0,
    ):
        assert ascii_int(bad) is None, bad


@given(st.text(max_size=40))
def test_never_raises_and_only_accepts_ascii_digits(text: str) -> None:
    value = ascii_int(text)
    assert value is None or (text.isascii() and text.isdigit() and value == int(text))
