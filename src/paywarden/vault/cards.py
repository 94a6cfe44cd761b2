"""Card data validation with Stripe's error codes and messages.

A pure module: no I/O, no clock (``now`` is passed in). :func:`parse_card` turns
what a client sent into a :class:`CardInput` or raises one
:class:`CardValidationError` for the first problem found, checked in the order
number, expiry month, expiry year, expiry date, security code.

Error codes and messages follow Stripe's card errors (https://docs.stripe.com/error-codes
and the ``message`` Stripe returns; e.g. stripe-ruby-mock's ``failures.rb`` records
the same strings). On tokenization Stripe reports a past expiry as a bad field, not
as ``expired_card``: a past year is ``invalid_expiry_year`` ("Your card's expiration
year is invalid.", seen when old test tokens aged out: stripe/stripe-node#219,
stripe/stripe-ios#983) and a past month of the current year is
``invalid_expiry_month`` (stripe-ruby-mock maps its ``expired_card_month`` and
``expired_card_year`` cases to these two codes). ``expired_card`` stays a decline
code at authorization time. No message ever repeats a submitted value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from paywarden.core.errors import CardError
from paywarden.core.secrets import CardNumber, CardSecurityCode

# Stripe's card error codes for bad card data, with the message Stripe returns.
MESSAGES: dict[str, str] = {
    "incorrect_number": "Your card number is incorrect.",
    "invalid_number": "Your card number is invalid.",
    "invalid_expiry_month": "Your card's expiration month is invalid.",
    "invalid_expiry_year": "Your card's expiration year is invalid.",
    "invalid_cvc": "Your card's security code is invalid.",
}

PARAM_NUMBER = "card[number]"
PARAM_EXP_MONTH = "card[exp_month]"
PARAM_EXP_YEAR = "card[exp_year]"
PARAM_CVC = "card[cvc]"

# An expiry further ahead than this is a typo, not a card (Stripe rejects it too).
MAX_YEARS_AHEAD = 50

# IIN ranges per brand, most specific first: the first match wins, so Discover's
# 622126-622925 precedes UnionPay's 62, and Mastercard's 2-series is explicit.
# The ranges are the networks' published IIN ranges (Mastercard's 2-series dates
# from 2017; Discover's includes the UnionPay co-brand range); the brand names are
# Stripe's ``card.brand`` values. Co-badged schemes (Cartes Bancaires, eftpos) share
# Visa/Mastercard ranges and cannot be told apart by IIN, so they are not listed.
_IIN_RANGES: tuple[tuple[str, str, str], ...] = (
    ("622126", "622925", "discover"),
    ("6011", "6011", "discover"),
    ("644", "649", "discover"),
    ("65", "65", "discover"),
    ("62", "62", "unionpay"),
    ("3528", "3589", "jcb"),
    ("34", "34", "amex"),
    ("37", "37", "amex"),
    ("300", "305", "diners"),
    ("36", "36", "diners"),
    ("38", "39", "diners"),
    ("2221", "2720", "mastercard"),
    ("51", "55", "mastercard"),
    ("4", "4", "visa"),
)

# Valid PAN lengths per brand.
_LENGTHS: dict[str, frozenset[int]] = {
    "visa": frozenset({13, 16, 19}),
    "mastercard": frozenset({16}),
    "amex": frozenset({15}),
    "discover": frozenset(range(16, 20)),
    "diners": frozenset(range(14, 20)),
    "jcb": frozenset(range(16, 20)),
    "unionpay": frozenset(range(16, 20)),
    "unknown": frozenset(range(12, 20)),
}


class CardValidationError(CardError):
    """Card data was rejected (HTTP 402, ``card_error``).

    ``code`` is Stripe's error code, ``param`` the form field (``card[number]``...),
    ``message`` Stripe's human message. None of them carries a submitted value.
    """

    def __init__(self, *, code: str, param: str, message: str | None = None) -> None:
        super().__init__(message or MESSAGES[code], code=code, param=param)
        # Narrowed from the base class: a validation error always has both.
        self.code: str = code
        self.param: str = param


@dataclass(frozen=True)
class CardInput:
    """A card as the client sent it, after validation."""

    number: CardNumber
    exp_month: int
    exp_year: int  # four digits: a two-digit year was read as 20YY
    cvc: CardSecurityCode | None
    brand: str  # Stripe's ``card.brand``, detected once during validation


# Luhn's doubled digit (2d, minus 9 when above 9), by character.
_LUHN_DOUBLE = {str(d): (2 * d - 9 if d > 4 else 2 * d) for d in range(10)}


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of ISO/IEC 7812-1 annex B. False for non-digits or ''."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    # From the right: digits in odd positions count as they are, every second
    # one doubled. Slices and map keep the loop in C.
    total = sum(map(int, digits[-1::-2])) + sum(map(_LUHN_DOUBLE.__getitem__, digits[-2::-2]))
    return total % 10 == 0


def detect_brand(number: CardNumber) -> str:
    """Stripe's ``card.brand`` for the number's IIN, or ``"unknown"``."""
    return _brand(number.bin)  # six digits cover every range in the table


@functools.lru_cache(maxsize=4096)
def _brand(prefix: str) -> str:
    # Cached by BIN: the first six digits are display data (PCI DSS 3.4.1),
    # never the card number, and the table is fixed.
    for start, end, brand in _IIN_RANGES:
        head = prefix[: len(start)]
        if start <= head <= end:
            return brand
    return "unknown"


def parse_card(
    *,
    number: str,
    exp_month: str | int,
    exp_year: str | int,
    cvc: str | None,
    now: datetime,
) -> CardInput:
    """Validate a card; raise :class:`CardValidationError` for the first bad field.

    ``now`` must be timezone-aware; expiry is judged by the calendar month in UTC.
    A card is valid through the last day of its expiry month.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    today = now.astimezone(UTC)

    card_number, brand = _parse_number(number)

    month = _parse_month(exp_month)
    year = _parse_year(exp_year)
    if year < today.year or year > today.year + MAX_YEARS_AHEAD:
        raise CardValidationError(code="invalid_expiry_year", param=PARAM_EXP_YEAR)
    if year == today.year and month < today.month:
        raise CardValidationError(code="invalid_expiry_month", param=PARAM_EXP_MONTH)

    code = None if cvc is None else _parse_cvc(cvc, brand=brand)
    return CardInput(number=card_number, exp_month=month, exp_year=year, cvc=code, brand=brand)


def _parse_number(number: str) -> tuple[CardNumber, str]:
    """The number and its brand. The digits are read out of the wrapper once."""
    try:
        card_number = CardNumber(number)
    except ValueError:
        # The ValueError carries no value either; drop it so nothing chains.
        raise CardValidationError(code="invalid_number", param=PARAM_NUMBER) from None
    digits = card_number.reveal()
    brand = _brand(digits[:6])
    if len(digits) not in _LENGTHS[brand]:
        raise CardValidationError(code="invalid_number", param=PARAM_NUMBER)
    if not luhn_valid(digits):
        raise CardValidationError(code="incorrect_number", param=PARAM_NUMBER)
    return card_number, brand


def _small_int(value: str | int, *, max_digits: int) -> int | None:
    """A non-negative int from an int or a short ASCII digit string; None otherwise.

    Never calls ``int()`` on arbitrary text, so no exception can quote the input.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if 0 < len(value) <= max_digits and value.isascii() and value.isdigit():
        return int(value)
    return None


def _parse_month(value: str | int) -> int:
    month = _small_int(value, max_digits=2)
    if month is None or not 1 <= month <= 12:
        raise CardValidationError(code="invalid_expiry_month", param=PARAM_EXP_MONTH)
    return month


def _parse_year(value: str | int) -> int:
    year = _small_int(value, max_digits=4)
    if isinstance(value, str) and len(value) not in (2, 4):
        year = None
    if year is None or year < 0:
        raise CardValidationError(code="invalid_expiry_year", param=PARAM_EXP_YEAR)
    # Like Stripe, a two-digit year means 20YY.
    return 2000 + year if year < 100 else year


def _parse_cvc(value: str, *, brand: str) -> CardSecurityCode:
    try:
        code = CardSecurityCode(value)
    except ValueError:
        raise CardValidationError(code="invalid_cvc", param=PARAM_CVC) from None
    # American Express prints a 4-digit CID; every other brand a 3-digit code.
    if code.length != (4 if brand == "amex" else 3):
        raise CardValidationError(code="invalid_cvc", param=PARAM_CVC)
    return code
