"""End-to-end card encryption for Python clients.

A client seals the card to the vault's public key with HPKE (RFC 9180), using a
fresh ephemeral key for every card, and sends only the ciphertext: the gateway
relays it to the vault and cannot read it. The browser twin of this module is
``js/paywarden-e2e.js``; both follow one wire format:

* suite ``DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM``, base mode,
  single-shot seal with empty aad;
* ``info`` = ``b"paywarden card v1 " + key_id``;
* plaintext = UTF-8 JSON ``{"number", "exp_month", "exp_year", "cvc"?}``;
* payload = base64url (no padding) of ``enc (32 bytes) || ciphertext+tag``, sent
  as ``card[encrypted][key_id]`` and ``card[encrypted][payload]`` on
  ``POST /v1/payment_methods`` or ``POST /v1/tokens``.

The card number is never kept on an object here and never put in an exception.

Usage::

    key = fetch_encryption_key("https://gw.example", "pwp_test_...")
    form = {"type": "card", **encrypt_card(key, number=..., exp_month=12, exp_year=2030)}
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from paywarden.vault.crypto import hpke

SUITE = hpke.SUITE_NAME  # "DHKEM(X25519, HKDF-SHA256)/HKDF-SHA256/AES-128-GCM"
KEYS_PATH = "/v1/paywarden/encryption_keys"
PUBLIC_KEY_BYTES = 32
DEFAULT_TIMEOUT = 5.0

__all__ = [
    "SUITE",
    "EncryptionKey",
    "EncryptionKeyError",
    "encrypt_card",
    "encrypt_card_params",
    "fetch_encryption_key",
]


class EncryptionKeyError(Exception):
    """The gateway's encryption key could not be fetched or is unusable.

    ``status`` is the HTTP status when the gateway answered with an error
    (``message`` is then Stripe's error message), else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class EncryptionKey:
    """The vault's public key as published by the gateway (no secret in it)."""

    id: str
    public_key: bytes
    expires_at: int | None
    # The merchant account the key was fetched for: sealed into every payload,
    # so a payload made for one merchant cannot be replayed by another.
    account: str | None = None

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("an encryption key needs an id")
        if len(self.public_key) != PUBLIC_KEY_BYTES:
            raise ValueError(f"public_key must be {PUBLIC_KEY_BYTES} raw bytes")


def fetch_encryption_key(
    gateway_url: str, publishable_key: str, *, client: httpx.Client | None = None
) -> EncryptionKey:
    """The gateway's current encryption key (the first of the published list).

    Raises :class:`EncryptionKeyError` on an HTTP error, a malformed answer, or
    a suite this helper does not speak.
    """
    url = gateway_url.rstrip("/") + KEYS_PATH
    headers = {"Authorization": f"Bearer {publishable_key}"}
    try:
        if client is None:
            with httpx.Client(timeout=DEFAULT_TIMEOUT) as own:
                response = own.get(url, headers=headers)
        else:
            response = client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise EncryptionKeyError(f"could not reach the gateway: {type(exc).__name__}") from exc
    body = _json_or_none(response)
    if response.is_error:
        raise EncryptionKeyError(
            _error_message(body, response.status_code), status=response.status_code
        )
    return _parse_key_list(body)


def encrypt_card(
    key: EncryptionKey,
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str | None = None,
) -> dict[str, str]:
    """Seal a card to ``key``: form fields ready for ``POST /v1/payment_methods``.

    Returns ``{"card[encrypted][key_id]": ..., "card[encrypted][payload]": ...}``.
    Each call uses a fresh ephemeral key, so two calls never give the same payload.
    """
    key_id, payload = _seal_card(
        key, number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc
    )
    return {"card[encrypted][key_id]": key_id, "card[encrypted][payload]": payload}


def encrypt_card_params(
    key: EncryptionKey,
    *,
    number: str,
    exp_month: int,
    exp_year: int,
    cvc: str | None = None,
) -> dict[str, Any]:
    """Like :func:`encrypt_card`, nested for the Stripe SDK's params dict.

    ``stripe.PaymentMethod.create(type="card", **encrypt_card_params(key, ...))``.
    """
    key_id, payload = _seal_card(
        key, number=number, exp_month=exp_month, exp_year=exp_year, cvc=cvc
    )
    return {"card": {"encrypted": {"key_id": key_id, "payload": payload}}}


# --- internals ---------------------------------------------------------------


def _seal_card(
    key: EncryptionKey, *, number: str, exp_month: int, exp_year: int, cvc: str | None
) -> tuple[str, str]:
    # Messages name the field, never its value: the value may be a card number.
    if not isinstance(number, str) or not number:
        raise TypeError("number must be a non-empty str")
    for name, value in (("exp_month", exp_month), ("exp_year", exp_year)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int")
    if cvc is not None and not isinstance(cvc, str):
        raise TypeError("cvc must be a str or None")
    card: dict[str, str | int] = {"number": number, "exp_month": exp_month, "exp_year": exp_year}
    if cvc:
        card["cvc"] = cvc
    # Bound to the merchant and to the moment: the vault refuses a payload for
    # another account, an old one, or one it has already opened.
    if key.account:
        card["account"] = key.account
    card["iat"] = int(time.time())
    plaintext = json.dumps(card, separators=(",", ":")).encode("utf-8")
    sealed = hpke.seal_to(key.public_key, plaintext, info=hpke.info_for(key.id))
    return key.id, _b64url(sealed)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_message(body: Any, status: int) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return f"the gateway answered HTTP {status}"


def _parse_key_list(body: Any) -> EncryptionKey:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise EncryptionKeyError("the gateway offered no encryption key")
    entry: dict[str, Any] = data[0]
    key_id, public_key, suite = entry.get("id"), entry.get("public_key"), entry.get("suite")
    expires_at = entry.get("expires_at")
    if not isinstance(key_id, str) or not key_id or not isinstance(public_key, str):
        raise EncryptionKeyError("the gateway's encryption key is malformed")
    if suite != SUITE:
        raise EncryptionKeyError("the gateway's encryption key uses an unsupported suite")
    if expires_at is not None and (isinstance(expires_at, bool) or not isinstance(expires_at, int)):
        raise EncryptionKeyError("the gateway's encryption key is malformed")
    try:
        raw = _b64url_decode(public_key)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise EncryptionKeyError("the gateway's encryption key is malformed") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise EncryptionKeyError("the gateway's encryption key is malformed")
    account = entry.get("account")
    return EncryptionKey(
        id=key_id,
        public_key=raw,
        expires_at=expires_at,
        account=account if isinstance(account, str) and account else None,
    )
