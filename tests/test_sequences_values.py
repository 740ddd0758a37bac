"""The sequence value parser: integers, names, ``name + N`` sums, and nothing else."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cca_hil.arch.rmi import MASK64
from cca_hil.errors import SequenceError
from cca_hil.seqformat import Expr, parse_value, resolve

NAMES = ("rd", "rtt0", "data_1", "platform.pa_limit", "saved")
ENV = {
    "rd": 0x9000_0000,
    "rtt0": 0x9001_0000,
    "data_1": 0x9002_0000,
    "platform.pa_limit": 1 << 48,
    "saved": 7,
}

numbers = st.integers(min_value=0, max_value=(1 << 64) - 1)


STYLES = ("dec", "hex", "HEX", "bin", "under")


def literal(value: int, style: str) -> str:
    """``value`` spelled the way ``style`` says."""
    if style == "dec":
        return str(value)
    if style == "hex":
        return hex(value)
    if style == "HEX":
        return "0X" + format(value, "X")
    if style == "bin":
        return bin(value)
    return "0x" + format(value, "_x")


@st.composite
def sums(draw: st.DrawFn) -> tuple[str, int]:
    """Text of a sum of literals and names, and its value modulo 2^64."""
    count = draw(st.integers(min_value=1, max_value=5))
    text = ""
    total = 0
    for i in range(count):
        sign = 1 if i == 0 else draw(st.sampled_from([1, -1]))
        if i:
            text += draw(st.sampled_from(["", " ", "  "])) + ("+" if sign > 0 else "-")
            text += draw(st.sampled_from(["", " "]))
        if draw(st.booleans()):
            name = draw(st.sampled_from(NAMES))
            text += name
            total += sign * ENV[name]
        else:
            value = draw(numbers)
            text += literal(value, draw(st.sampled_from(STYLES)))
            total += sign * value
    return text, total & MASK64


@given(sums())
def test_a_sum_of_literals_and_names_resolves_to_its_value(case: tuple[str, int]) -> None:
    text, expected = case
    value = parse_value(text, names=NAMES, where="s.yaml:1")
    assert resolve(value, ENV) == expected


@given(sums())
def test_a_sum_without_names_is_resolved_at_load_time(case: tuple[str, int]) -> None:
    text, _ = case
    value = parse_value(text, names=NAMES, where="s.yaml:1")
    if not any(name in text for name in NAMES):
        assert isinstance(value, int)
    else:
        assert isinstance(value, Expr)


@given(numbers, st.sampled_from(STYLES))
def test_every_integer_spelling_parses_to_the_number(value: int, style: str) -> None:
    assert parse_value(literal(value, style), names=(), where="s.yaml:1") == value


@given(st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1))
def test_yaml_integers_are_masked_to_64_bits(value: int) -> None:
    assert parse_value(value, names=(), where="s.yaml:1") == value & MASK64


@given(st.text(max_size=40))
def test_any_text_either_parses_or_is_a_sequence_error_naming_the_place(text: str) -> None:
    try:
        value = parse_value(text, names=NAMES, where="s.yaml:9")
    except SequenceError as exc:
        assert exc.where == "s.yaml:9"
    else:
        assert 0 <= resolve(value, ENV) <= MASK64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rd + 1", 0x9000_0001),
        ("rd+0x1000", 0x9000_1000),
        ("platform.pa_limit - 0x1000", (1 << 48) - 0x1000),
        ("-1", MASK64),
        ("- rd", (-0x9000_0000) & MASK64),
        ("010", 10),
        ("0x8000_0000", 0x8000_0000),
        ("rtt0 - rd", 0x10000),
    ],
)
def test_examples(text: str, expected: int) -> None:
    assert resolve(parse_value(text, names=NAMES, where="s.yaml:1"), ENV) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("rd +", "cannot read value 'rd +'"),
        ("rd + + 1", "two operators in a row"),
        ("rd 1", "missing + or - between terms"),
        ("rd * 2", "cannot read value 'rd * 2'"),
        ("nothing", "unknown name 'nothing'"),
        ("", "cannot read value ''"),
        (1.5, "value must be an integer"),
        (None, "value must be an integer"),
        (True, "value must be an integer"),
    ],
)
def test_bad_values_are_rejected(raw: object, message: str) -> None:
    with pytest.raises(SequenceError, match=re.escape(message)):
        parse_value(raw, names=NAMES, where="s.yaml:1")
