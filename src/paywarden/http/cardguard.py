"""Card data at the door.

Runs on the decoded parameters before validation, so no value is ever echoed in
a validation error, logged, stored, or kept for idempotent replay.

* On the card-intake endpoints (``POST /v1/payment_methods``, ``POST /v1/tokens``)
  :func:`take_card_data` lifts ``card[number]``, ``card[exp_month]``,
  ``card[exp_year]``, ``card[cvc]`` — or the HPKE-encrypted
  ``card[encrypted][key_id]`` / ``card[encrypted][payload]`` — out of the
  parameters into masked types, to be relayed to the vault and dropped.
* Everywhere else, and on the intake endpoints when no vault is configured,
  :func:`refuse_raw_card_data` refuses any ``number`` or ``cvc`` field, wherever
  it is nested.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from paywarden.core.errors import InvalidRequestError
from paywarden.core.secrets import Secret
from paywarden.vault.client import CardData, EncryptedCard, RawCard

RAW_CARD_MESSAGE = (
    "Sending raw card numbers to this API is not enabled: this gateway has no card vault "
    "configured. Use a test payment method such as 'pm_card_visa' or a test token such as "
    "'tok_visa'."
)
_CARD_FIELDS = frozenset({"number", "cvc"})
_INTAKE_FIELDS = ("number", "exp_month", "exp_year", "cvc", "encrypted")


WRONG_PLACE_MESSAGE = (
    "Card numbers are accepted only by POST /v1/payment_methods and POST /v1/tokens "
    "(or encrypted, as card[encrypted]); create a payment method first and pass its id."
)
URL_MESSAGE = (
    "Card data must never be sent in the URL, where it ends up in logs: send it in the "
    "request body."
)


def _has_card_field(params: dict[str, Any]) -> bool:
    stack: list[tuple[str, Any]] = list(params.items())
    while stack:
        key, value = stack.pop()
        if key in _CARD_FIELDS or key == "encrypted":
            return True
        if isinstance(value, dict):
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)
    return False


def refuse_card_data_in_url(query: dict[str, Any]) -> None:
    if _has_card_field(query):
        raise InvalidRequestError(URL_MESSAGE, code="card_data_in_url", param="card[number]")


def refuse_raw_card_data(params: dict[str, Any], *, vault_enabled: bool = False) -> None:
    stack: list[tuple[str, Any]] = list(params.items())
    while stack:
        key, value = stack.pop()
        if key in _CARD_FIELDS:
            raise InvalidRequestError(
                WRONG_PLACE_MESSAGE if vault_enabled else RAW_CARD_MESSAGE,
                code="raw_card_data_not_enabled",
                param="card[number]",
            )
        if isinstance(value, dict):
            stack.extend(value.items())
        elif isinstance(value, list):
            stack.extend((key, v) for v in value)


def _plain(value: Any, param: str) -> str:
    """A scalar card field as a string; the vault judges its content. Messages
    never contain the value."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InvalidRequestError(f"Invalid {param}: must be a string.", param=param)
    text = str(value)
    if len(text) > 64:
        raise InvalidRequestError(f"Invalid {param}: too long.", param=param)
    return text


def take_card_data(params: dict[str, Any], *, intake: bool, vault_enabled: bool) -> CardData | None:
    """On an intake endpoint, remove card data from ``params`` (in place) and
    return it masked; elsewhere, refuse it."""
    card = params.get("card")
    if not intake or not isinstance(card, dict) or not any(f in card for f in _INTAKE_FIELDS):
        refuse_raw_card_data(params, vault_enabled=vault_enabled)
        return None
    if not vault_enabled:
        raise InvalidRequestError(
            RAW_CARD_MESSAGE, code="raw_card_data_not_enabled", param="card[number]"
        )
    fields = {f: card.pop(f) for f in _INTAKE_FIELDS if f in card}
    if not card:
        params.pop("card")
    # Anything left that looks like card data elsewhere is still refused.
    refuse_raw_card_data(params, vault_enabled=True)
    encrypted = fields.pop("encrypted", None)
    if encrypted is not None:
        if fields:
            raise InvalidRequestError(
                "Send either card[encrypted] or the card fields, not both.",
                param="card[encrypted]",
            )
        if not isinstance(encrypted, dict) or set(encrypted) - {"key_id", "payload"}:
            raise InvalidRequestError(
                "card[encrypted] takes key_id and payload.", param="card[encrypted]"
            )
        key_id, payload = encrypted.get("key_id"), encrypted.get("payload")
        if not isinstance(key_id, str) or not 1 <= len(key_id) <= 64:
            raise InvalidRequestError(
                "Missing or invalid card[encrypted][key_id].", param="card[encrypted][key_id]"
            )
        if not isinstance(payload, str) or not 1 <= len(payload) <= 8192:
            raise InvalidRequestError(
                "Missing or invalid card[encrypted][payload].", param="card[encrypted][payload]"
            )
        return EncryptedCard(key_id=key_id, payload=payload)
    for required in ("number", "exp_month", "exp_year"):
        if required not in fields:
            raise InvalidRequestError(
                f"Missing required param: card[{required}].",
                param=f"card[{required}]",
                code="parameter_missing",
            )
    number = Secret(_plain(fields["number"], "card[number]"), "card number")
    cvc = fields.get("cvc")
    return RawCard(
        number=number,
        exp_month=_plain(fields["exp_month"], "card[exp_month]"),
        exp_year=_plain(fields["exp_year"], "card[exp_year]"),
        cvc=Secret(_plain(cvc, "card[cvc]"), "cvc") if cvc is not None else None,
    )


def card_fingerprint(card: CardData, key: Secret) -> str:
    """What stands for the card in an idempotency request fingerprint.

    Built only from what the gateway may keep anyway (BIN, last four, length,
    expiry), never from the full number or the CVC: a hash over the whole
    number would be brute-forced from the stored BIN and last four in seconds
    by anyone holding the gateway's database and secrets. Two different cards
    that agree on all of these under one idempotency key are not told apart.
    """
    if isinstance(card, EncryptedCard):
        material = f"enc|{card.key_id}|{card.payload}"
    else:
        digits = "".join(ch for ch in card.number.reveal() if ch.isdigit())
        shown = digits[-4:] if len(digits) < 15 else f"{digits[:6]}..{digits[-4:]}"
        material = f"raw|{shown}|{len(digits)}|{card.exp_month}|{card.exp_year}"
    return hmac.new(key.reveal().encode(), material.encode(), hashlib.sha256).hexdigest()
