"""The attributes a rule may use, and rule validation as the API reports it.

Attribute names follow Stripe Radar's (``:amount_in_usd:``, ``:card_country:``,
``:ip_country:``, ``:risk_level:``…); the velocity counters come from
:func:`paywarden.fraud.velocity.counter_names`.
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal
from functools import cache

from paywarden.core.errors import ParameterError
from paywarden.fraud.rules import RuleSyntaxError, parse_rule
from paywarden.fraud.velocity import counter_names

RULE_ACTIONS = ("request_3ds", "allow", "block", "review")

# Per-payment attributes and their kinds (velocity counters are ints).
SIGNAL_ATTRIBUTES: dict[str, type] = {
    "amount_in_usd": Decimal,
    "amount": int,
    "currency": str,
    "card_country": str,
    "card_bin": str,
    "card_brand": str,
    "card_funding": str,
    "card_fingerprint": str,
    "customer": str,
    "email": str,
    "email_domain": str,
    "ip_address": str,
    "ip_country": str,
    "device_id": str,
    "user_agent_family": str,
    "accept_language": str,
    "risk_score": int,
    "risk_level": str,
    "is_new_card_on_customer": bool,
    # Not `cvc_check`: rules run before the authorization, and the CVC check is
    # the issuer's answer to it, so a rule on it could never match.
}


@cache
def attribute_types() -> dict[str, type]:
    types = dict(SIGNAL_ATTRIBUTES)
    for name in counter_names():
        types[name] = int
    return types


def check_rule(source: str, *, known_lists: Collection[str]) -> str:
    """The rule's action; a 400 pointing at the mistake if it does not parse."""
    try:
        rule = parse_rule(
            source.strip(),
            known_attributes=attribute_types().keys(),
            attribute_types=attribute_types(),
            known_lists=known_lists,
        )
    except RuleSyntaxError as exc:
        raise ParameterError(
            f"Invalid rule: {exc.message} (column {exc.column + 1}).\n{exc.pointer()}",
            param="rule",
            code="rule_syntax_error",
        ) from None
    return rule.action
