"""Refuses raw card data at the door while no card vault is configured.

Runs on the decoded parameters before validation, so the refusal is specific
and the value is never echoed, logged, stored or kept for idempotent replay.
"""

from __future__ import annotations

from typing import Any

from paywarden.core.errors import InvalidRequestError

RAW_CARD_MESSAGE = (
    "Sending raw card numbers to this API is not enabled: this gateway has no card vault "
    "configured. Use a test payment method such as 'pm_card_visa' or a test token such as "
    "'tok_visa'."
)
_CARD_FIELDS = frozenset({"number", "cvc"})


def refuse_raw_card_data(params: dict[str, Any]) -> None:
    stack: list[tuple[str, Any]] = list(params.items())
    while stack:
        key, value = stack.pop()
        if key in _CARD_FIELDS:
            raise InvalidRequestError(
                RAW_CARD_MESSAGE, code="raw_card_data_not_enabled", param="card[number]"
            )
        if isinstance(value, dict):
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)
