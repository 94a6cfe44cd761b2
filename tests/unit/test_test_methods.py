"""The gateway's magic test ids agree with the sandbox acquirer's card table, and the
gateway side holds no card number."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paywarden.acquirer_sandbox import cards
from paywarden.payments import test_methods
from paywarden.payments.test_methods import (
    ALIASES,
    TEST_PAYMENT_METHODS,
    TestPaymentMethod,
    all_test_payment_method_ids,
    lookup_test_payment_method,
)

STRIPE_BRANDS = {"visa", "mastercard", "amex", "discover", "diners", "jcb", "unionpay"}


def test_every_gateway_ref_matches_the_sandbox_card() -> None:
    for ref, pm in TEST_PAYMENT_METHODS.items():
        card = cards.card_for_ref(ref)
        assert card is not None, f"{ref} is not a sandbox test card"
        assert (pm.brand, pm.last4, pm.funding, pm.country) == (
            card.brand,
            card.last4,
            card.funding,
            card.country,
        ), ref


def test_aliases_point_at_known_refs() -> None:
    for alias, ref in ALIASES.items():
        assert ref in TEST_PAYMENT_METHODS, alias
        assert alias not in TEST_PAYMENT_METHODS


def test_gateway_source_holds_no_card_number() -> None:
    source = Path(test_methods.__file__).read_text(encoding="utf-8")
    assert re.search(r"\d{13,19}", source) is None
    # Not even spelled with separators ("4242 4242 ...").
    assert re.search(r"(?:\d[ -]?){12,18}\d", source) is None


def test_stripe_ids_resolve() -> None:
    visa = lookup_test_payment_method("pm_card_visa")
    assert visa == TestPaymentMethod(
        ref="visa",
        brand="visa",
        last4=cards.card_for_ref("visa").last4,  # type: ignore[union-attr]
        exp_month=12,
        exp_year=2034,
        funding="credit",
        country="US",
    )
    assert lookup_test_payment_method("tok_visa") == visa
    assert lookup_test_payment_method("pm_card_mastercard_prepaid").funding == "prepaid"  # type: ignore[union-attr]
    assert lookup_test_payment_method("pm_card_gb").country == "GB"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("pm_id", "ref"),
    [
        ("pm_card_visa_chargeDeclined", "chargeDeclined"),
        ("pm_card_chargeDeclined", "chargeDeclined"),
        ("tok_chargeDeclined", "chargeDeclined"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "chargeDeclinedInsufficientFunds"),
        ("pm_card_visa_chargeDeclinedVelocityLimitExceeded", "chargeDeclinedVelocityLimitExceeded"),
        ("pm_card_threeDSecure2Required", "threeDSecure2Required"),
        ("pm_card_radarBlock", "radarBlock"),
        ("pm_card_refundFail", "refundFail"),
    ],
)
def test_aliases_and_tokens_name_the_same_card(pm_id: str, ref: str) -> None:
    pm = lookup_test_payment_method(pm_id)
    assert pm is not None
    assert pm.ref == ref


@pytest.mark.parametrize(
    "pm_id",
    [
        "pm_card_nope",
        "pm_1234",
        "visa",
        "",
        "tok_",
        "pm_card_",
        "card_visa",
        "pm_card_mastercard_2series",
    ],
)
def test_unknown_ids_are_none(pm_id: str) -> None:
    assert lookup_test_payment_method(pm_id) is None


def test_brands_and_expiry_are_stripe_shaped() -> None:
    for pm in TEST_PAYMENT_METHODS.values():
        assert pm.brand in STRIPE_BRANDS
        assert (pm.exp_month, pm.exp_year) == (12, 2034)
        assert len(pm.last4) == 4
        assert pm.last4.isdigit()
        assert pm.funding in {"credit", "debit", "prepaid"}
        assert re.fullmatch(r"[A-Z]{2}", pm.country)


def test_all_ids_resolve() -> None:
    ids = all_test_payment_method_ids()
    assert "pm_card_visa" in ids
    assert "tok_visa" in ids
    assert "pm_card_visa_chargeDeclined" in ids
    for pm_id in ids:
        assert lookup_test_payment_method(pm_id) is not None, pm_id


DOCUMENTED_REFS = [
    *["visa", "mastercard", "amex", "discover", "diners", "jcb", "unionpay"],
    *["visa_debit", "mastercard_debit", "mastercard_prepaid"],
    *["us", "gb", "de", "fr", "jp", "br", "ca", "au"],
    *["chargeDeclined", "chargeDeclinedInsufficientFunds", "chargeDeclinedLostCard"],
    *["chargeDeclinedStolenCard", "chargeDeclinedExpiredCard", "chargeDeclinedIncorrectCvc"],
    *["chargeDeclinedProcessingError", "chargeDeclinedVelocityLimitExceeded"],
    *["chargeCustomerFail", "radarBlock", "riskLevelHighest", "riskLevelElevated"],
    *["chargeDeclinedFraudulent", "createDispute", "refundFail"],
    *["authenticationRequired", "authenticationRequiredOnSetup", "threeDSecure2Required"],
    *["threeDSecureRequired", "authenticationRequiredChargeDeclinedInsufficientFunds"],
]


@pytest.mark.parametrize("ref", DOCUMENTED_REFS)
def test_the_documented_stripe_ids_are_all_there(ref: str) -> None:
    assert ref in TEST_PAYMENT_METHODS
    assert lookup_test_payment_method(f"pm_card_{ref}") is not None
