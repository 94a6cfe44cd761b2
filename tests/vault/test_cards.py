"""Card validation with Stripe's error codes (paywarden.vault.cards)."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.errors import CardError
from paywarden.core.secrets import CardNumber
from paywarden.vault.cards import (
    MESSAGES,
    CardInput,
    CardValidationError,
    detect_brand,
    luhn_valid,
    parse_card,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)

# Stripe's test cards by brand (https://docs.stripe.com/testing#cards).
STRIPE_CARDS = [
    ("4242424242424242", "visa"),
    ("4000056655665556", "visa"),  # debit
    ("5555555555554444", "mastercard"),
    ("2223003122003222", "mastercard"),  # 2-series
    ("5200828282828210", "mastercard"),  # debit
    ("378282246310005", "amex"),
    ("371449635398431", "amex"),
    ("6011111111111117", "discover"),
    ("6011000990139424", "discover"),
    ("6011981111111113", "discover"),  # debit
    ("3056930009020004", "diners"),
    ("36227206271667", "diners"),  # 14 digits
    ("3566002020360505", "jcb"),
    ("6200000000000005", "unionpay"),
    ("6205500000000000004", "unionpay"),  # 19 digits
]


def _parse(
    number: str = "4242424242424242",
    exp_month: str | int = 12,
    exp_year: str | int = 2030,
    cvc: str | None = "123",
    now: datetime = NOW,
) -> CardInput:
    return parse_card(number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc, now=now)


def _error(**kw: object) -> CardValidationError:
    with pytest.raises(CardValidationError) as info:
        _parse(**kw)  # type: ignore[arg-type]
    return info.value


def _pan(prefix: str, length: int = 16) -> CardNumber:
    return CardNumber(prefix.ljust(length, "0"))


# --- Luhn ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("79927398713", True),  # the worked example of ISO/IEC 7812-1 annex B / Wikipedia
        ("79927398710", False),
        ("4242424242424242", True),
        ("4242424242424241", False),  # Stripe's incorrect_number test card
        ("0", True),
        ("0000000000000000", True),
        ("1", False),
        ("", False),
        ("4242 4242 4242 4242", False),  # callers strip separators first
        ("abc", False),
        ("٤٢٤٢", False),  # non-ASCII digits are not digits here
    ],
)
def test_luhn_known_answers(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@given(st.from_regex(r"[0-9]{1,30}", fullmatch=True))
def test_luhn_exactly_one_check_digit(payload: str) -> None:
    assert sum(luhn_valid(payload + d) for d in "0123456789") == 1


@given(st.from_regex(r"[0-9]{2,30}", fullmatch=True), st.data())
def test_luhn_catches_every_single_digit_error(digits: str, data: st.DataObject) -> None:
    if not luhn_valid(digits):
        return
    i = data.draw(st.integers(0, len(digits) - 1))
    other = data.draw(st.sampled_from([d for d in "0123456789" if d != digits[i]]))
    assert not luhn_valid(digits[:i] + other + digits[i + 1 :])


# --- Brand detection -------------------------------------------------------


@pytest.mark.parametrize(("number", "brand"), STRIPE_CARDS)
def test_stripe_test_cards_parse_with_brand(number: str, brand: str) -> None:
    cvc = "1234" if brand == "amex" else "123"
    card = _parse(number=number, cvc=cvc)
    assert card.number.reveal() == number
    assert detect_brand(card.number) == brand


@pytest.mark.parametrize(
    ("prefix", "brand"),
    [
        ("4", "visa"),
        ("2220", "unknown"),
        ("2221", "mastercard"),
        ("2720", "mastercard"),
        ("2721", "unknown"),
        ("50", "unknown"),
        ("51", "mastercard"),
        ("55", "mastercard"),
        ("56", "unknown"),
        ("34", "amex"),
        ("37", "amex"),
        ("35", "unknown"),
        ("3527", "unknown"),
        ("3528", "jcb"),
        ("3589", "jcb"),
        ("3590", "unknown"),
        ("300", "diners"),
        ("305", "diners"),
        ("306", "unknown"),
        ("36", "diners"),
        ("38", "diners"),
        ("39", "diners"),
        ("6011", "discover"),
        ("6012", "unknown"),
        ("643", "unknown"),
        ("644", "discover"),
        ("649", "discover"),
        ("65", "discover"),
        ("62", "unionpay"),
        ("622125", "unionpay"),
        ("622126", "discover"),  # the co-brand range is checked before UnionPay's 62
        ("622925", "discover"),
        ("622926", "unionpay"),
        ("1", "unknown"),
        ("9", "unknown"),
    ],
)
def test_detect_brand_boundaries(prefix: str, brand: str) -> None:
    assert detect_brand(_pan(prefix)) == brand


# --- Number errors ---------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("4242424242424241", "incorrect_number"),  # Luhn
        ("4242 4242 4242 4241", "incorrect_number"),
        ("", "invalid_number"),
        ("4242", "invalid_number"),
        ("4242x4242424242424242", "invalid_number"),
        ("4242_4242_4242_4242", "invalid_number"),
        ("4242424242424242" * 10, "invalid_number"),
        ("424242424242424", "invalid_number"),  # visa, 15 digits
        ("42424242424242", "invalid_number"),  # visa, 14 digits
        ("3782822463100050", "invalid_number"),  # amex, 16 digits
        ("55555555555544440", "invalid_number"),  # mastercard, 17 digits
        ("60111111111111", "invalid_number"),  # discover, 14 digits
        ("3056930009020", "invalid_number"),  # diners, 13 digits
        ("35660020203605", "invalid_number"),  # jcb, 14 digits
        ("9000000000008", "incorrect_number"),  # unknown brand, 13 digits: length fine
        ("90000000003", "invalid_number"),  # unknown brand, 11 digits
    ],
)
def test_number_errors(number: str, code: str) -> None:
    err = _error(number=number)
    assert err.code == code
    assert err.param == "card[number]"
    assert err.message == MESSAGES[code]


def test_unknown_brand_accepts_12_to_19_digits() -> None:
    for length in range(12, 20):
        body = "9" + "0" * (length - 2)
        check = next(d for d in "0123456789" if luhn_valid(body + d))
        card = _parse(number=body + check)
        assert detect_brand(card.number) == "unknown"
        assert card.number.length == length


def test_messages_match_stripe() -> None:
    assert MESSAGES == {
        "incorrect_number": "Your card number is incorrect.",
        "invalid_number": "Your card number is invalid.",
        "invalid_expiry_month": "Your card's expiration month is invalid.",
        "invalid_expiry_year": "Your card's expiration year is invalid.",
        "invalid_cvc": "Your card's security code is invalid.",
    }


# --- Expiry ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("month", "expected"),
    [(1, 1), (12, 12), ("1", 1), ("01", 1), ("12", 12)],
)
def test_exp_month_accepted(month: str | int, expected: int) -> None:
    assert _parse(exp_month=month).exp_month == expected


@pytest.mark.parametrize("month", [0, 13, -1, "0", "00", "13", "001", "", "ab", "1.0", " 1", True])
def test_exp_month_invalid(month: str | int) -> None:
    err = _error(exp_month=month)
    assert (err.code, err.param) == ("invalid_expiry_month", "card[exp_month]")


@pytest.mark.parametrize(
    ("year", "expected"),
    [(2030, 2030), ("2030", 2030), (30, 2030), ("30", 2030), ("25", 2025), (2075, 2075)],
)
def test_exp_year_accepted(year: str | int, expected: int) -> None:
    assert _parse(exp_year=year).exp_year == expected


@pytest.mark.parametrize(
    "year",
    [
        2024,  # past
        "24",  # past, two digits
        1999,
        2076,  # more than 50 years ahead
        99,  # 2099
        "030",
        "20300",
        "",
        "year",
        "２０３０",  # fullwidth  # noqa: RUF001
        -1,
        False,
    ],
)
def test_exp_year_invalid(year: str | int) -> None:
    err = _error(exp_year=year)
    assert (err.code, err.param) == ("invalid_expiry_year", "card[exp_year]")


def test_past_month_of_current_year_is_invalid_expiry_month() -> None:
    err = _error(exp_month=5, exp_year=2025)
    assert (err.code, err.param) == ("invalid_expiry_month", "card[exp_month]")


def test_card_is_valid_through_its_expiry_month() -> None:
    assert _parse(exp_month=6, exp_year=2025).exp_month == 6
    last_moment = datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert _parse(exp_month=12, exp_year=2025, now=last_moment).exp_year == 2025
    err = _error(exp_month=12, exp_year=2025, now=last_moment + timedelta(seconds=1))
    assert err.code == "invalid_expiry_year"


def test_expiry_is_judged_in_utc() -> None:
    # 00:30 on 1 January in UTC+1 is still 31 December in UTC.
    cet = timezone(timedelta(hours=1))
    assert _parse(exp_month=12, exp_year=2025, now=datetime(2026, 1, 1, 0, 30, tzinfo=cet))


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        _parse(now=datetime(2025, 6, 15))  # noqa: DTZ001 - the naive datetime is under test


# --- CVC -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "cvc"),
    [
        ("378282246310005", "1234"),
        ("4242424242424242", "123"),
        ("5555555555554444", "000"),
        ("6011111111111117", "999"),
        ("9000000000001", "123"),  # unknown brand
    ],
)
def test_cvc_accepted(number: str, cvc: str) -> None:
    card = _parse(number=number, cvc=cvc)
    assert card.cvc is not None
    assert card.cvc.reveal() == cvc


def test_cvc_is_optional() -> None:
    assert _parse(cvc=None).cvc is None


@pytest.mark.parametrize(
    ("number", "cvc"),
    [
        ("378282246310005", "123"),  # amex needs four
        ("4242424242424242", "1234"),  # everyone else three
        ("4242424242424242", "12"),
        ("4242424242424242", "12345"),
        ("4242424242424242", ""),
        ("4242424242424242", "abc"),
        ("4242424242424242", "12 3"),
        ("4242424242424242", "١٢٣"),
    ],
)
def test_cvc_invalid(number: str, cvc: str) -> None:
    err = _error(number=number, cvc=cvc)
    assert (err.code, err.param) == ("invalid_cvc", "card[cvc]")


# --- The error itself ------------------------------------------------------


def test_first_bad_field_wins() -> None:
    assert _error(number="4242424242424241", exp_month=13, cvc="1").code == "incorrect_number"
    assert _error(exp_month=13, exp_year=1999, cvc="1").code == "invalid_expiry_month"
    assert _error(exp_year=1999, cvc="1").code == "invalid_expiry_year"


def test_error_is_a_stripe_card_error() -> None:
    err = _error(number="4242424242424241")
    assert isinstance(err, CardError)
    assert err.status == 402
    assert err.to_dict() == {
        "error": {
            "type": "card_error",
            "code": "incorrect_number",
            "param": "card[number]",
            "message": "Your card number is incorrect.",
        }
    }
    assert str(err) == "Your card number is incorrect."


SECRET_INPUTS = [
    {"number": "4242424242424241"},
    {"number": "4242 4242 4242 4241"},
    {"number": "4242-4242-4242-424x"},
    {"number": "4242424242424242424242"},
    {"number": "3782822463100050"},
    {"number": "378282246310005", "cvc": "987"},
    {"number": "4242424242424242", "cvc": "98765"},
    {"number": "4242424242424242", "cvc": "9x7"},
    {"number": "4242424242424242", "exp_month": "4242424242424242"},
    {"number": "4242424242424242", "exp_year": "4242424242424242"},
]


@pytest.mark.parametrize("kw", SECRET_INPUTS)
def test_errors_never_echo_values(kw: dict[str, str]) -> None:
    err = _error(**kw)
    rendered = [
        str(err),
        repr(err),
        repr(err.args),
        str(err.to_dict()),
        "".join(traceback.format_exception(err)),
    ]
    assert err.message in MESSAGES.values()
    for value in kw.values():
        for text in rendered:
            assert value not in text
            assert value.replace(" ", "").replace("-", "") not in text
    assert err.__cause__ is None
    assert err.__suppress_context__ or err.__context__ is None


@given(
    number=st.text(alphabet="0123456789 -x", max_size=30),
    month=st.one_of(st.integers(-5, 20), st.text(max_size=3)),
    year=st.one_of(st.integers(-5, 3000), st.text(max_size=5)),
    cvc=st.one_of(st.none(), st.text(alphabet="0123456789a", max_size=5)),
)
def test_any_input_yields_a_card_or_a_known_error(
    number: str, month: int | str, year: int | str, cvc: str | None
) -> None:
    outcome: CardInput | CardValidationError
    try:
        outcome = _parse(number=number, exp_month=month, exp_year=year, cvc=cvc)
    except CardValidationError as err:
        outcome = err
    if isinstance(outcome, CardValidationError):
        assert outcome.message == MESSAGES[outcome.code]
        digits = number.replace(" ", "").replace("-", "")
        assert len(digits) < 4 or digits not in outcome.message
    else:
        assert luhn_valid(outcome.number.reveal())
        assert 1 <= outcome.exp_month <= 12


def test_card_input_repr_is_masked() -> None:
    card = _parse(number="4242 4242 4242 4242", cvc="987")
    text = repr(card)
    assert "4242424242424242" not in text
    assert "987" not in text
    assert "CardNumber(424242******4242)" in text
    assert "CardSecurityCode(***)" in text
    assert card == _parse(number="4242424242424242", cvc="987")
    assert hash(card) == hash(_parse(number="4242424242424242", cvc="987"))


def _luhn_reference(digits: str) -> bool:
    """ISO/IEC 7812-1 annex B, digit by digit from the right."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@given(st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_luhn_matches_the_reference(digits: str) -> None:
    assert luhn_valid(digits) is _luhn_reference(digits)


def test_parse_card_reports_the_brand_it_validated_with() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for number, brand in (("4242424242424242", "visa"), ("378282246310005", "amex")):
        cvc = "1234" if brand == "amex" else "123"
        card = parse_card(number=number, exp_month=1, exp_year=2030, cvc=cvc, now=now)
        assert card.brand == brand == detect_brand(card.number)
