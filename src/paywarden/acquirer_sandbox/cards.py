"""The sandbox acquirer's test cards: the ONLY module allowed to hold card numbers.

The numbers and their behaviours follow Stripe's published test cards
(https://docs.stripe.com/testing, sections "Cards by brand", "Cards by country",
"Declined payments", "Fraud prevention", "Disputes", "Refunds", "Available
balance" and "3D Secure authentication"; plus https://docs.stripe.com/radar/testing).
Each ``ref`` is Stripe's PaymentMethod id without the ``pm_card_`` prefix, so the
gateway's ``pm_card_<ref>`` / ``tok_<ref>`` ids (payments/test_methods.py) name a
row here without ever holding the number.

Rows marked ``# unconfirmed:`` could not be checked against a copy of Stripe's docs
and come from best knowledge. Rows whose ``ref`` Stripe does not publish (the
card exists only as a number in Stripe's tables) carry a sandbox-only ``ref`` and
are marked ``# sandbox-only ref``; the gateway table does not list them.

Lookups:

* :func:`card_for_ref` — a row by ref, ``None`` if unknown.
* :func:`card_for_pan` — a row by number. A number failing the Luhn check declines
  with ``incorrect_number``; an unknown valid number approves, as a card network
  would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

BehaviourKind = Literal["approve", "decline", "require_3ds", "refund_fails"]
RiskLevel = Literal["normal", "elevated", "highest"]

# Stripe's refund failure reason for its asynchronous-refund-failure card.
REFUND_FAILURE_REASON: Final = "expired_or_canceled_card"


@dataclass(frozen=True)
class Behaviour:
    """What the issuer does with an authorization on this card.

    * ``approve`` — approved.
    * ``decline`` — declined with ``decline_code`` (Stripe's decline codes).
    * ``require_3ds`` — the issuer wants 3-D Secure; ``after_authentication`` is what
      happens once the customer has authenticated (approve, or decline with a code).
    * ``refund_fails`` — approved, but every refund on it fails
      (:data:`REFUND_FAILURE_REASON`).
    """

    kind: BehaviourKind
    decline_code: str | None = None
    after_authentication: Behaviour | None = None


APPROVE: Final = Behaviour("approve")
REFUND_FAILS: Final = Behaviour("refund_fails")


def decline(code: str) -> Behaviour:
    return Behaviour("decline", decline_code=code)


def require_3ds(then: Behaviour = APPROVE) -> Behaviour:
    return Behaviour("require_3ds", after_authentication=then)


@dataclass(frozen=True)
class SandboxCard:
    ref: str | None  # None only for a synthetic row (unknown or invalid number)
    pan: str
    brand: str  # Stripe's card.brand values: visa, mastercard, amex, discover, ...
    funding: str  # credit | debit | prepaid | unknown
    country: str  # ISO 3166-1 alpha-2 of the issuer
    behaviour: Behaviour = APPROVE
    risk_level: RiskLevel = "normal"
    # Radar's CVC check fails when a CVC is supplied (Stripe's cvcCheckFail card).
    fails_cvc_check: bool = False
    # Informational: the dispute Stripe would open later (the sandbox has none).
    dispute: str | None = None
    description: str = ""

    @property
    def last4(self) -> str:
        return self.pan[-4:]


def _c(
    ref: str,
    pan: str,
    brand: str,
    funding: str = "credit",
    country: str = "US",
    *,
    behaviour: Behaviour = APPROVE,
    risk: RiskLevel = "normal",
    cvc_fail: bool = False,
    dispute: str | None = None,
    note: str = "",
) -> SandboxCard:
    return SandboxCard(
        ref=ref,
        pan=pan,
        brand=brand,
        funding=funding,
        country=country,
        behaviour=behaviour,
        risk_level=risk,
        fails_cvc_check=cvc_fail,
        dispute=dispute,
        description=note,
    )


_VISA = "visa"
_MC = "mastercard"
_3DS = require_3ds()

# Order matters only for numbers listed twice: the first row wins a PAN lookup.
TEST_CARDS: Final[tuple[SandboxCard, ...]] = (
    # --- Cards by brand (Stripe's basic cards; billing country US) ---
    _c("visa", "4242424242424242", _VISA),
    _c("visa_debit", "4000056655665556", _VISA, "debit"),
    _c("mastercard", "5555555555554444", _MC),
    _c("mastercard_2series", "2223003122003222", _MC),  # sandbox-only ref
    _c("mastercard_debit", "5200828282828210", _MC, "debit"),
    _c("mastercard_prepaid", "5105105105105100", _MC, "prepaid"),
    _c("amex", "378282246310005", "amex"),
    _c("amex_2", "371449635398431", "amex"),  # sandbox-only ref
    _c("discover", "6011111111111117", "discover"),
    _c("discover_2", "6011000990139424", "discover"),  # sandbox-only ref
    _c("discover_debit", "6011981111111113", "discover", "debit"),  # sandbox-only ref
    _c("diners", "3056930009020004", "diners"),
    _c("diners_14digit", "36227206271667", "diners"),  # sandbox-only ref
    # unconfirmed: issuer country of pm_card_jcb / pm_card_unionpay (JP / CN from
    # best knowledge; Stripe's docs only warn the issuer is not in the US).
    _c("jcb", "3566002020360505", "jcb", country="JP"),
    _c("unionpay", "6200000000000005", "unionpay", country="CN"),
    _c("unionpay_debit", "6200000000000047", "unionpay", "debit", "CN"),  # sandbox-only ref
    _c("unionpay_19digit", "6205500000000000004", "unionpay", country="CN"),  # sandbox-only ref
    # --- Co-branded cards (ids from a copy of Stripe's PaymentMethods tab) ---
    _c("visa_cartesBancaires", "4000002500001001", _VISA, country="FR"),
    _c("mastercard_cartesBancaires", "5555552500001001", _MC, country="FR"),
    _c("visa_debit_eftposAuCoBranded", "4000050360000001", _VISA, "debit", "AU"),
    _c("mastercard_debit_eftposAuCoBranded", "5555050360000080", _MC, "debit", "AU"),
    # --- Cards by country: Americas ---
    _c("us", "4242424242424242", _VISA, country="US"),
    _c("ar", "4000000320000021", _VISA, country="AR"),
    _c("br", "4000000760000002", _VISA, country="BR"),
    _c("ca", "4000001240000000", _VISA, country="CA"),
    _c("cl", "4000001520000001", _VISA, country="CL"),
    _c("co", "4000001700000003", _VISA, country="CO"),
    _c("cr", "4000001880000005", _VISA, country="CR"),
    _c("ec", "4000002180000000", _VISA, country="EC"),
    _c("mx", "4000004840008001", _VISA, country="MX"),
    _c("pa", "4000005910000000", _VISA, country="PA"),
    _c("py", "4000006000000066", _VISA, country="PY"),
    _c("pe", "4000006040000068", _VISA, country="PE"),
    _c("uy", "4000008580000003", _VISA, country="UY"),
    # --- Cards by country: Europe and Middle East ---
    _c("ae", "4000007840000001", _VISA, country="AE"),
    _c("ae_mastercard", "5200007840000022", _MC, country="AE"),
    _c("at", "4000000400000008", _VISA, country="AT"),
    _c("be", "4000000560000004", _VISA, country="BE"),
    _c("bg", "4000001000000000", _VISA, country="BG"),
    _c("by", "4000001120000005", _VISA, country="BY"),
    _c("hr", "4000001910000009", _VISA, country="HR"),
    _c("cy", "4000001960000008", _VISA, country="CY"),
    _c("cz", "4000002030000002", _VISA, country="CZ"),
    _c("dk", "4000002080000001", _VISA, country="DK"),
    _c("ee", "4000002330000009", _VISA, country="EE"),
    _c("fi", "4000002460000001", _VISA, country="FI"),
    _c("fr", "4000002500000003", _VISA, country="FR"),
    _c("de", "4000002760000016", _VISA, country="DE"),
    _c("gi", "4000002920000005", _VISA, country="GI"),
    _c("gr", "4000003000000030", _VISA, country="GR"),
    _c("hu", "4000003480000005", _VISA, country="HU"),
    _c("ie", "4000003720000005", _VISA, country="IE"),
    _c("it", "4000003800000008", _VISA, country="IT"),
    _c("lv", "4000004280000005", _VISA, country="LV"),
    _c("li", "4000004380000004", _VISA, country="LI"),
    _c("lt", "4000004400000000", _VISA, country="LT"),
    _c("lu", "4000004420000006", _VISA, country="LU"),
    _c("mt", "4000004700000007", _VISA, country="MT"),
    _c("nl", "4000005280000002", _VISA, country="NL"),
    _c("no", "4000005780000007", _VISA, country="NO"),
    _c("pl", "4000006160000005", _VISA, country="PL"),
    _c("pt", "4000006200000007", _VISA, country="PT"),
    _c("ro", "4000006420000001", _VISA, country="RO"),
    _c("sa", "4000006820000007", _VISA, country="SA"),  # sandbox-only ref (no Stripe id)
    _c("si", "4000007050000006", _VISA, country="SI"),
    _c("sk", "4000007030000001", _VISA, country="SK"),
    _c("es", "4000007240000007", _VISA, country="ES"),
    _c("se", "4000007520000008", _VISA, country="SE"),
    _c("ch", "4000007560000009", _VISA, country="CH"),
    _c("gb", "4000008260000000", _VISA, country="GB"),
    _c("gb_debit", "4000058260000005", _VISA, "debit", "GB"),
    _c("gb_mastercard", "5555558265554449", _MC, country="GB"),
    # --- Cards by country: Asia Pacific ---
    _c("au", "4000000360000006", _VISA, country="AU"),
    _c("cn", "4000001560000002", _VISA, country="CN"),
    _c("hk", "4000003440000004", _VISA, country="HK"),
    _c("in", "4000003560000008", _VISA, country="IN"),
    _c("jp", "4000003920000003", _VISA, country="JP"),
    _c("jp_jcb", "3530111333300000", "jcb", country="JP"),  # sandbox-only ref
    _c("my", "4000004580000002", _VISA, country="MY"),
    _c("nz", "4000005540000008", _VISA, country="NZ"),
    _c("sg", "4000007020000003", _VISA, country="SG"),
    _c("tw", "4000001580000008", _VISA, country="TW"),
    _c("th_credit", "4000007640000003", _VISA, country="TH"),
    _c("th_debit", "4000057640000008", _VISA, "debit", "TH"),
    # --- Declined payments ---
    _c("chargeDeclined", "4000000000000002", _VISA, behaviour=decline("generic_decline")),
    _c(
        "chargeDeclinedInsufficientFunds",
        "4000000000009995",
        _VISA,
        behaviour=decline("insufficient_funds"),
    ),
    _c("chargeDeclinedLostCard", "4000000000009987", _VISA, behaviour=decline("lost_card")),
    _c("chargeDeclinedStolenCard", "4000000000009979", _VISA, behaviour=decline("stolen_card")),
    # Stripe answers error code expired_card / incorrect_cvc / processing_error with
    # no decline code; the sandbox reports that code as its decline_code.
    _c("chargeDeclinedExpiredCard", "4000000000000069", _VISA, behaviour=decline("expired_card")),
    _c(
        "chargeDeclinedIncorrectCvc",
        "4000000000000127",
        _VISA,
        behaviour=decline("incorrect_cvc"),
    ),
    _c(
        "chargeDeclinedProcessingError",
        "4000000000000119",
        _VISA,
        behaviour=decline("processing_error"),
    ),
    _c(
        "chargeDeclinedVelocityLimitExceeded",
        "4000000000006975",
        _VISA,
        behaviour=decline("card_velocity_exceeded"),
    ),
    # Attaching to a customer succeeds, charging fails.
    _c("chargeCustomerFail", "4000000000000341", _VISA, behaviour=decline("generic_decline")),
    # --- Fraud prevention (Radar) ---
    _c(
        "radarBlock",
        "4100000000000019",
        _VISA,
        behaviour=decline("fraudulent"),
        risk="highest",
        note="always blocked by Radar",
    ),
    # Stripe's older name for the always-blocked card (docs.stripe.com/radar/testing,
    # tok_chargeDeclinedFraudulent).
    _c(
        "chargeDeclinedFraudulent",
        "4100000000000019",
        _VISA,
        behaviour=decline("fraudulent"),
        risk="highest",
    ),
    # "Radar might block it depending on your settings": the default rules block
    # risk_level highest, so the sandbox blocks it.
    _c(
        "riskLevelHighest",
        "4000000000004954",
        _VISA,
        behaviour=decline("fraudulent"),
        risk="highest",
    ),
    _c("riskLevelElevated", "4000000000009235", _VISA, risk="elevated"),
    _c("cvcCheckFail", "4000000000000101", _VISA, cvc_fail=True),
    # Address checks: the sandbox does not check addresses, so these approve
    # (Stripe's default rules let them through unless a custom rule blocks).
    _c("avsZipFail", "4000000000000036", _VISA),
    _c("avsLine1Fail", "4000000000000028", _VISA),
    _c("avsFail", "4000000000000010", _VISA),
    _c("avsUnchecked", "4000000000000044", _VISA),
    # --- Disputes (the charge succeeds; the dispute is informational here) ---
    _c("createDispute", "4000000000000259", _VISA, dispute="fraudulent"),
    _c(
        "createDisputeProductNotReceived",
        "4000000000002685",
        _VISA,
        dispute="product_not_received",
    ),
    _c("createDisputeInquiry", "4000000000001976", _VISA, dispute="inquiry"),
    _c("createIssuerFraudRecord", "4000000000005423", _VISA, dispute="early_fraud_warning"),
    _c("createMultipleDisputes", "4000000404000079", _VISA, dispute="multiple"),
    # unconfirmed: the following three ids come from secondary copies of the docs.
    _c("createCe3EligibleDispute", "4000000404000038", _VISA, dispute="fraudulent"),
    _c("createComplianceDispute", "4000008400000779", _VISA, dispute="compliance"),
    _c(
        "createMastercardComplianceDispute",
        "5105008400000002",
        _MC,
        dispute="compliance",
    ),
    # --- Refunds ---
    _c("refundFail", "4000000000005126", _VISA, behaviour=REFUND_FAILS),
    # Stripe: refund starts pending, later succeeds; the sandbox refunds at once.
    _c("pendingRefund", "4000000000007726", _VISA),
    # --- Available balance / pricing ---
    _c("bypassPending", "4000000000000077", _VISA),
    _c("bypassPendingInternational", "4000003720000278", _VISA, country="IE"),
    # unconfirmed: domesticPricing is from older docs (no longer listed).
    _c("domesticPricing", "4000000000000093", _VISA),
    # --- 3D Secure: authentication and setup ---
    # Country codes of these rows are read off the number (digits 5-7 are the
    # ISO 3166 numeric code in Stripe's scheme: 250 FR, 276 DE, 380 IT, 826 GB, 840 US).
    _c("authenticationRequiredOnSetup", "4000002500003155", _VISA, "credit", "FR", behaviour=_3DS),
    _c("authenticationRequired", "4000002760003184", _VISA, "credit", "DE", behaviour=_3DS),
    _c(
        "authenticationRequiredSetupForOffSession",
        "4000003800000446",
        _VISA,
        "credit",
        "IT",
        behaviour=_3DS,
    ),
    _c(
        "authenticationRequiredChargeDeclinedInsufficientFunds",
        "4000008260003178",
        _VISA,
        "credit",
        "GB",
        behaviour=require_3ds(decline("insufficient_funds")),
    ),
    # --- 3D Secure: support and availability ---
    # unconfirmed: issuer country IE for threeDSecure2Required (a secondary copy
    # says "IE-issued").
    _c("threeDSecure2Required", "4000000000003220", _VISA, "credit", "IE", behaviour=_3DS),
    _c(
        "threeDSecureRequiredChargeDeclined",
        "4000008400001629",
        _VISA,
        behaviour=require_3ds(decline("generic_decline")),
    ),
    # The 3DS lookup fails; Stripe declines with card_declined. The sandbox uses
    # processing_error as the decline code (unconfirmed which code Stripe gives).
    _c(
        "threeDSecureRequiredProcessingError",
        "4000008400001280",
        _VISA,
        behaviour=decline("processing_error"),
    ),
    _c("threeDSecureOptional", "4000000000003055", _VISA),
    _c("threeDSecureOptionalProcessingError", "4000000000003097", _VISA),
    _c("amex_threeDSecureNotSupported", "378282246310005", "amex"),
    # unconfirmed: threeDSecureRequired is the 3-D Secure 1 card of older docs.
    _c("threeDSecureRequired", "4000000000003063", _VISA, behaviour=_3DS),
)


def luhn_valid(number: str) -> bool:
    """True when ``number`` is all digits and passes the Luhn (mod 10) check."""
    if not number.isdigit() or not number.isascii():
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return digit
    raise ValueError("partial must be digits")  # pragma: no cover - unreachable for digits


def detect_brand(pan: str) -> str:
    """Stripe-style brand from the number's prefix (IIN ranges); ``unknown`` otherwise."""
    two = int(pan[:2]) if len(pan) >= 2 else -1
    three = int(pan[:3]) if len(pan) >= 3 else -1
    four = int(pan[:4]) if len(pan) >= 4 else -1
    if pan.startswith("4"):
        return "visa"
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return "mastercard"
    if two in (34, 37):
        return "amex"
    if pan.startswith(("6011", "65")) or 644 <= three <= 649:
        return "discover"
    if 3528 <= four <= 3589:
        return "jcb"
    if two in (36, 38, 39) or 300 <= three <= 305:
        return "diners"
    if two == 62:
        return "unionpay"
    return "unknown"


_BY_REF: Final[Mapping[str, SandboxCard]] = MappingProxyType(
    {card.ref: card for card in TEST_CARDS if card.ref is not None}
)


def _first_by_pan() -> dict[str, SandboxCard]:
    index: dict[str, SandboxCard] = {}
    for card in TEST_CARDS:
        index.setdefault(card.pan, card)
    return index


_BY_PAN: Final[Mapping[str, SandboxCard]] = MappingProxyType(_first_by_pan())

MIN_PAN_LENGTH: Final = 12
MAX_PAN_LENGTH: Final = 19


def all_refs() -> tuple[str, ...]:
    return tuple(_BY_REF)


def card_for_ref(ref: str) -> SandboxCard | None:
    return _BY_REF.get(ref)


def card_for_pan(pan: str) -> SandboxCard:
    """The card a number names. Always answers: an invalid number gives a synthetic
    row declining with ``incorrect_number``; an unknown valid one approves."""
    known = _BY_PAN.get(pan)
    if known is not None:
        return known
    valid = MIN_PAN_LENGTH <= len(pan) <= MAX_PAN_LENGTH and luhn_valid(pan)
    return SandboxCard(
        ref=None,
        pan=pan,
        brand=detect_brand(pan) if pan.isdigit() else "unknown",
        funding="unknown",
        country="US",  # the issuer of an arbitrary number is not known; reported as US
        behaviour=APPROVE if valid else decline("incorrect_number"),
        description="unknown card" if valid else "invalid card number",
    )
