"""Stripe's magic test PaymentMethod and Token ids, on the gateway side.

``pm_card_visa``, ``pm_card_chargeDeclined``, ``tok_visa``... name a test card of
the sandbox acquirer by its ``ref`` (the id without ``pm_card_`` / ``tok_``). This
module knows what Stripe shows for such a card (brand, last4, funding, country,
a fixed future expiry) and nothing else: it holds no card number, and a hook
greps it for digit runs. The numbers live only in ``acquirer_sandbox/cards.py``;
a unit test checks both tables agree.

Source of the ids: https://docs.stripe.com/testing (PaymentMethods and Tokens
tabs) and https://docs.stripe.com/radar/testing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Final

PM_PREFIX: Final = "pm_card_"
TOKEN_PREFIX: Final = "tok_"  # noqa: S105 - Stripe's test token prefix, not a secret

# Every test card shows this expiry: fixed, in the future (Stripe's docs suggest 12/34).
TEST_EXP_MONTH: Final = 12
TEST_EXP_YEAR: Final = 2034


@dataclass(frozen=True)
class TestPaymentMethod:
    __test__: ClassVar[bool] = False  # not a pytest test class despite the name

    ref: str
    brand: str  # Stripe's card.brand: visa, mastercard, amex, discover, diners, jcb, unionpay
    last4: str
    exp_month: int
    exp_year: int
    funding: str  # credit | debit | prepaid
    country: str  # issuer country, ISO 3166-1 alpha-2


# Rows: ref, brand, last4, funding, country.
_ROWS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    ("visa", "visa", "4242", "credit", "US"),
    ("visa_debit", "visa", "5556", "debit", "US"),
    ("mastercard", "mastercard", "4444", "credit", "US"),
    ("mastercard_debit", "mastercard", "8210", "debit", "US"),
    ("mastercard_prepaid", "mastercard", "5100", "prepaid", "US"),
    ("amex", "amex", "0005", "credit", "US"),
    ("discover", "discover", "1117", "credit", "US"),
    ("diners", "diners", "0004", "credit", "US"),
    ("jcb", "jcb", "0505", "credit", "JP"),
    ("unionpay", "unionpay", "0005", "credit", "CN"),
    ("visa_cartesBancaires", "visa", "1001", "credit", "FR"),
    ("mastercard_cartesBancaires", "mastercard", "1001", "credit", "FR"),
    ("visa_debit_eftposAuCoBranded", "visa", "0001", "debit", "AU"),
    ("mastercard_debit_eftposAuCoBranded", "mastercard", "0080", "debit", "AU"),
    ("us", "visa", "4242", "credit", "US"),
    ("ar", "visa", "0021", "credit", "AR"),
    ("br", "visa", "0002", "credit", "BR"),
    ("ca", "visa", "0000", "credit", "CA"),
    ("cl", "visa", "0001", "credit", "CL"),
    ("co", "visa", "0003", "credit", "CO"),
    ("cr", "visa", "0005", "credit", "CR"),
    ("ec", "visa", "0000", "credit", "EC"),
    ("mx", "visa", "8001", "credit", "MX"),
    ("pa", "visa", "0000", "credit", "PA"),
    ("py", "visa", "0066", "credit", "PY"),
    ("pe", "visa", "0068", "credit", "PE"),
    ("uy", "visa", "0003", "credit", "UY"),
    ("ae", "visa", "0001", "credit", "AE"),
    ("ae_mastercard", "mastercard", "0022", "credit", "AE"),
    ("at", "visa", "0008", "credit", "AT"),
    ("be", "visa", "0004", "credit", "BE"),
    ("bg", "visa", "0000", "credit", "BG"),
    ("by", "visa", "0005", "credit", "BY"),
    ("hr", "visa", "0009", "credit", "HR"),
    ("cy", "visa", "0008", "credit", "CY"),
    ("cz", "visa", "0002", "credit", "CZ"),
    ("dk", "visa", "0001", "credit", "DK"),
    ("ee", "visa", "0009", "credit", "EE"),
    ("fi", "visa", "0001", "credit", "FI"),
    ("fr", "visa", "0003", "credit", "FR"),
    ("de", "visa", "0016", "credit", "DE"),
    ("gi", "visa", "0005", "credit", "GI"),
    ("gr", "visa", "0030", "credit", "GR"),
    ("hu", "visa", "0005", "credit", "HU"),
    ("ie", "visa", "0005", "credit", "IE"),
    ("it", "visa", "0008", "credit", "IT"),
    ("lv", "visa", "0005", "credit", "LV"),
    ("li", "visa", "0004", "credit", "LI"),
    ("lt", "visa", "0000", "credit", "LT"),
    ("lu", "visa", "0006", "credit", "LU"),
    ("mt", "visa", "0007", "credit", "MT"),
    ("nl", "visa", "0002", "credit", "NL"),
    ("no", "visa", "0007", "credit", "NO"),
    ("pl", "visa", "0005", "credit", "PL"),
    ("pt", "visa", "0007", "credit", "PT"),
    ("ro", "visa", "0001", "credit", "RO"),
    ("si", "visa", "0006", "credit", "SI"),
    ("sk", "visa", "0001", "credit", "SK"),
    ("es", "visa", "0007", "credit", "ES"),
    ("se", "visa", "0008", "credit", "SE"),
    ("ch", "visa", "0009", "credit", "CH"),
    ("gb", "visa", "0000", "credit", "GB"),
    ("gb_debit", "visa", "0005", "debit", "GB"),
    ("gb_mastercard", "mastercard", "4449", "credit", "GB"),
    ("au", "visa", "0006", "credit", "AU"),
    ("cn", "visa", "0002", "credit", "CN"),
    ("hk", "visa", "0004", "credit", "HK"),
    ("in", "visa", "0008", "credit", "IN"),
    ("jp", "visa", "0003", "credit", "JP"),
    ("my", "visa", "0002", "credit", "MY"),
    ("nz", "visa", "0008", "credit", "NZ"),
    ("sg", "visa", "0003", "credit", "SG"),
    ("tw", "visa", "0008", "credit", "TW"),
    ("th_credit", "visa", "0003", "credit", "TH"),
    ("th_debit", "visa", "0008", "debit", "TH"),
    ("chargeDeclined", "visa", "0002", "credit", "US"),
    ("chargeDeclinedInsufficientFunds", "visa", "9995", "credit", "US"),
    ("chargeDeclinedLostCard", "visa", "9987", "credit", "US"),
    ("chargeDeclinedStolenCard", "visa", "9979", "credit", "US"),
    ("chargeDeclinedExpiredCard", "visa", "0069", "credit", "US"),
    ("chargeDeclinedIncorrectCvc", "visa", "0127", "credit", "US"),
    ("chargeDeclinedProcessingError", "visa", "0119", "credit", "US"),
    ("chargeDeclinedVelocityLimitExceeded", "visa", "6975", "credit", "US"),
    ("chargeCustomerFail", "visa", "0341", "credit", "US"),
    ("radarBlock", "visa", "0019", "credit", "US"),
    ("chargeDeclinedFraudulent", "visa", "0019", "credit", "US"),
    ("riskLevelHighest", "visa", "4954", "credit", "US"),
    ("riskLevelElevated", "visa", "9235", "credit", "US"),
    ("cvcCheckFail", "visa", "0101", "credit", "US"),
    ("avsZipFail", "visa", "0036", "credit", "US"),
    ("avsLine1Fail", "visa", "0028", "credit", "US"),
    ("avsFail", "visa", "0010", "credit", "US"),
    ("avsUnchecked", "visa", "0044", "credit", "US"),
    ("createDispute", "visa", "0259", "credit", "US"),
    ("createDisputeProductNotReceived", "visa", "2685", "credit", "US"),
    ("createDisputeInquiry", "visa", "1976", "credit", "US"),
    ("createIssuerFraudRecord", "visa", "5423", "credit", "US"),
    ("createMultipleDisputes", "visa", "0079", "credit", "US"),
    ("createCe3EligibleDispute", "visa", "0038", "credit", "US"),
    ("createComplianceDispute", "visa", "0779", "credit", "US"),
    ("createMastercardComplianceDispute", "mastercard", "0002", "credit", "US"),
    ("refundFail", "visa", "5126", "credit", "US"),
    ("pendingRefund", "visa", "7726", "credit", "US"),
    ("bypassPending", "visa", "0077", "credit", "US"),
    ("bypassPendingInternational", "visa", "0278", "credit", "IE"),
    ("domesticPricing", "visa", "0093", "credit", "US"),
    ("authenticationRequiredOnSetup", "visa", "3155", "credit", "FR"),
    ("authenticationRequired", "visa", "3184", "credit", "DE"),
    ("authenticationRequiredSetupForOffSession", "visa", "0446", "credit", "IT"),
    ("authenticationRequiredChargeDeclinedInsufficientFunds", "visa", "3178", "credit", "GB"),
    ("threeDSecure2Required", "visa", "3220", "credit", "IE"),
    ("threeDSecureRequiredChargeDeclined", "visa", "1629", "credit", "US"),
    ("threeDSecureRequiredProcessingError", "visa", "1280", "credit", "US"),
    ("threeDSecureOptional", "visa", "3055", "credit", "US"),
    ("threeDSecureOptionalProcessingError", "visa", "3097", "credit", "US"),
    ("amex_threeDSecureNotSupported", "amex", "0005", "credit", "US"),
    ("threeDSecureRequired", "visa", "3063", "credit", "US"),
)

# Stripe's alternative ids for the same card: ``pm_card_<alias>`` / ``tok_<alias>``
# resolve to ``ref``. Stripe's current docs spell some declines with a ``visa_``
# infix; the shorter older names still work.
ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "visa_chargeDeclined": "chargeDeclined",
        "visa_chargeDeclinedInsufficientFunds": "chargeDeclinedInsufficientFunds",
        "visa_chargeDeclinedLostCard": "chargeDeclinedLostCard",
        "visa_chargeDeclinedStolenCard": "chargeDeclinedStolenCard",
        "visa_chargeDeclinedVelocityLimitExceeded": "chargeDeclinedVelocityLimitExceeded",
    }
)

TEST_PAYMENT_METHODS: Final[Mapping[str, TestPaymentMethod]] = MappingProxyType(
    {
        ref: TestPaymentMethod(
            ref=ref,
            brand=brand,
            last4=last4,
            exp_month=TEST_EXP_MONTH,
            exp_year=TEST_EXP_YEAR,
            funding=funding,
            country=country,
        )
        for ref, brand, last4, funding, country in _ROWS
    }
)


def _ref_of(pm_id: str) -> str | None:
    for prefix in (PM_PREFIX, TOKEN_PREFIX):
        if pm_id.startswith(prefix):
            name = pm_id[len(prefix) :]
            return ALIASES.get(name, name)
    return None


def lookup_test_payment_method(pm_id: str) -> TestPaymentMethod | None:
    """The test card a magic id names (``pm_card_visa``, ``tok_visa``, an alias such
    as ``pm_card_visa_chargeDeclined``), or ``None`` for any other id."""
    ref = _ref_of(pm_id)
    if ref is None:
        return None
    return TEST_PAYMENT_METHODS.get(ref)


def is_test_payment_method_id(pm_id: str) -> bool:
    return lookup_test_payment_method(pm_id) is not None


def all_test_payment_method_ids() -> tuple[str, ...]:
    """Every magic id this table answers to: ``pm_card_*`` and ``tok_*``, aliases too."""
    names = [*TEST_PAYMENT_METHODS, *ALIASES]
    return tuple(f"{prefix}{name}" for prefix in (PM_PREFIX, TOKEN_PREFIX) for name in names)
