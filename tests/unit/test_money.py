"""Money and ISO 4217 currencies (paywarden.core.money)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.money import (
    CURRENCY_EXPONENTS,
    MAX_AMOUNT,
    CurrencyError,
    Money,
    normalize_currency,
)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("jpy", 0),
        ("krw", 0),
        ("clp", 0),
        ("vnd", 0),
        ("usd", 2),
        ("eur", 2),
        ("gbp", 2),
        ("kwd", 3),
        ("bhd", 3),
        ("jod", 3),
        ("omr", 3),
        ("tnd", 3),
        ("clf", 4),
        ("uyw", 4),
    ],
)
def test_exponents(code: str, exponent: int) -> None:
    assert CURRENCY_EXPONENTS[code] == exponent


def test_table_shape() -> None:
    assert all(len(c) == 3 and c.isascii() and c.islower() for c in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) == {0, 2, 3, 4}


def test_max_amount() -> None:
    assert MAX_AMOUNT == 99_999_999


@pytest.mark.parametrize(("raw", "expected"), [("usd", "usd"), ("USD", "usd"), ("UsD", "usd")])
def test_normalize_currency_case_insensitive(raw: str, expected: str) -> None:
    assert normalize_currency(raw) == expected


def test_normalize_currency_strips_whitespace() -> None:
    assert normalize_currency(" eur\t") == "eur"


@pytest.mark.parametrize("raw", ["", "us", "usdd", "xyz", "US D", "dollars", "usd1", "ùsd"])
def test_normalize_currency_rejects_unknown(raw: str) -> None:
    with pytest.raises(CurrencyError) as ei:
        normalize_currency(raw)
    assert str(ei.value) == raw


def test_currency_error_is_value_error() -> None:
    assert issubclass(CurrencyError, ValueError)


@given(st.sampled_from(sorted(CURRENCY_EXPONENTS)), st.lists(st.booleans(), min_size=3, max_size=3))
def test_normalize_any_casing_of_known_codes(code: str, upper: list[bool]) -> None:
    mixed = "".join(ch.upper() if u else ch for ch, u in zip(code, upper, strict=True))
    assert normalize_currency(mixed) == code


@given(st.text(max_size=5))
def test_normalize_result_is_always_a_known_code(raw: str) -> None:
    try:
        out = normalize_currency(raw)
    except CurrencyError:
        return
    assert out in CURRENCY_EXPONENTS


def test_money_holds_int_minor_units() -> None:
    m = Money(1999, "usd")
    assert m.amount == 1999
    assert m.currency == "usd"
    assert Money(0, "jpy").amount == 0
    assert Money(-5, "usd").amount == -5


@pytest.mark.parametrize("amount", [19.99, 1.0, float("nan"), Decimal("1"), Fraction(1, 2), "100"])
def test_money_rejects_non_int_amounts(amount: Any) -> None:
    with pytest.raises(TypeError, match="minor units"):
        Money(amount, "usd")


@pytest.mark.parametrize("amount", [True, False])
def test_money_rejects_bools(amount: bool) -> None:
    with pytest.raises(TypeError):
        Money(amount, "usd")


@pytest.mark.parametrize("currency", ["USD", "xyz", "", " usd"])
def test_money_rejects_non_normalized_or_unknown_currency(currency: str) -> None:
    with pytest.raises(CurrencyError):
        Money(1, currency)


def test_money_arithmetic_same_currency() -> None:
    assert Money(100, "usd") + Money(50, "usd") == Money(150, "usd")
    assert Money(100, "usd") - Money(150, "usd") == Money(-50, "usd")


def test_money_rejects_mixed_currency_arithmetic() -> None:
    with pytest.raises(CurrencyError, match="usd != eur"):
        Money(100, "usd") + Money(100, "eur")
    with pytest.raises(CurrencyError, match="jpy != usd"):
        Money(100, "jpy") - Money(100, "usd")


def test_money_is_immutable() -> None:
    m = Money(1, "usd")
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.amount = 2  # type: ignore[misc]


def test_money_equality_and_hash() -> None:
    assert Money(1, "usd") == Money(1, "usd")
    assert Money(1, "usd") != Money(1, "eur")
    assert len({Money(1, "usd"), Money(1, "usd")}) == 1


_codes = st.sampled_from(sorted(CURRENCY_EXPONENTS))


@given(_codes, st.integers(), st.integers())
def test_money_add_sub_inverse(code: str, a: int, b: int) -> None:
    x, y = Money(a, code), Money(b, code)
    assert (x + y).amount == a + b
    assert (x + y) - y == x
    assert isinstance((x - y).amount, int)


@given(_codes, _codes, st.integers(), st.integers())
def test_money_mixed_currencies_never_combine(c1: str, c2: str, a: int, b: int) -> None:
    if c1 == c2:
        return
    with pytest.raises(CurrencyError):
        Money(a, c1) + Money(b, c2)
    with pytest.raises(CurrencyError):
        Money(a, c1) - Money(b, c2)
