"""Payment methods. Cards come from Stripe's documented test payment methods and
tokens (``pm_card_visa``, ``tok_visa``…), or from the card vault: the gateway
keeps the vault's token and the card's display data (brand, BIN, last four,
expiry, funding, country, keyed fingerprint), never a card number."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from paywarden.core.errors import InvalidRequestError, ResourceMissingError
from paywarden.core.ids import new_id
from paywarden.core.secrets import Secret
from paywarden.http.params import merge_metadata
from paywarden.payments.models import CardToken, PaymentMethod
from paywarden.payments.test_methods import lookup_test_payment_method
from paywarden.vault.client import CardMetadata


def fingerprint(account_id: str, card_ref: str, pepper: Secret) -> str:
    mac = hmac.new(pepper.reveal().encode(), f"fp|{account_id}|{card_ref}".encode(), hashlib.sha256)
    return mac.hexdigest()[:16]


def from_test_id(
    session: Session,
    *,
    pm_id: str,
    account_id: str,
    livemode: bool,
    now: int,
    pepper: Secret,
    customer_id: str | None = None,
    billing_details: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    param: str = "payment_method",
) -> PaymentMethod:
    tpm = lookup_test_payment_method(pm_id)
    if tpm is None or livemode:
        raise ResourceMissingError("PaymentMethod", pm_id, param=param)
    pm = PaymentMethod(
        id=new_id("pm", 24),
        account_id=account_id,
        livemode=livemode,
        created=now,
        type="card",
        customer_id=customer_id,
        brand=tpm.brand,
        last4=tpm.last4,
        exp_month=tpm.exp_month,
        exp_year=tpm.exp_year,
        funding=tpm.funding,
        country=tpm.country,
        fingerprint=fingerprint(account_id, tpm.ref, pepper),
        card_ref=f"test:{tpm.ref}",
        billing_details=billing_details or {},
        metadata_=metadata or {},
    )
    session.add(pm)
    session.flush()
    return pm


_CARD_COLUMNS = (
    "brand",
    "bin",
    "last4",
    "exp_month",
    "exp_year",
    "funding",
    "country",
    "fingerprint",
)


def card_columns(source: CardMetadata | CardToken) -> dict[str, Any]:
    """The display data a payment method or token keeps about a card."""
    return {name: getattr(source, name) for name in _CARD_COLUMNS}


def from_vault(
    session: Session,
    *,
    meta: CardMetadata,
    account_id: str,
    livemode: bool,
    now: int,
    billing_details: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
) -> PaymentMethod:
    pm = PaymentMethod(
        id=new_id("pm", 24),
        account_id=account_id,
        livemode=livemode,
        created=now,
        type="card",
        **card_columns(meta),
        card_ref=f"vault:{meta.token}",
        billing_details=billing_details or {},
        metadata_=metadata or {},
    )
    session.add(pm)
    session.flush()
    return pm


def from_card_token(
    session: Session,
    *,
    token_id: str,
    account_id: str,
    livemode: bool,
    now: int,
    billing_details: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    param: str = "card[token]",
) -> PaymentMethod:
    """Consume a single-use ``tok_…`` made by ``POST /v1/tokens``."""
    tok = session.scalar(
        select(CardToken)
        .where(
            CardToken.id == token_id,
            CardToken.account_id == account_id,
            CardToken.livemode == livemode,
        )
        .with_for_update()
    )
    if tok is None:
        raise ResourceMissingError("token", token_id, param=param)
    if tok.used:
        raise InvalidRequestError(
            f"You cannot use a Stripe token more than once: {token_id}.",
            code="token_already_used",
            param=param,
        )
    tok.used = True
    pm = PaymentMethod(
        id=new_id("pm", 24),
        account_id=account_id,
        livemode=livemode,
        created=now,
        type="card",
        **card_columns(tok),
        card_ref=tok.card_ref,
        billing_details=billing_details or _billing_from_holder(tok.holder or {}),
        metadata_=metadata or {},
    )
    session.add(pm)
    session.flush()
    return pm


def vault_token(pm: PaymentMethod) -> str | None:
    kind, _, ref = pm.card_ref.partition(":")
    return ref if kind == "vault" else None


# Built once (building a select and its cache key costs about 50 µs a time).
_GET = select(PaymentMethod).where(
    PaymentMethod.id == bindparam("pm_id"),
    PaymentMethod.account_id == bindparam("account_id"),
    PaymentMethod.livemode == bindparam("livemode"),
)
_GET_FOR_UPDATE = _GET.with_for_update()


def get(
    session: Session,
    *,
    account_id: str,
    livemode: bool,
    pm_id: str,
    param: str = "id",
    for_update: bool = False,
) -> PaymentMethod:
    pm = session.scalar(
        _GET_FOR_UPDATE if for_update else _GET,
        {"pm_id": pm_id, "account_id": account_id, "livemode": livemode},
    )
    if pm is None:
        raise ResourceMissingError("PaymentMethod", pm_id, param=param)
    return pm


def resolve(
    session: Session,
    *,
    account_id: str,
    livemode: bool,
    pm_id: str,
    now: int,
    pepper: Secret,
    param: str = "payment_method",
) -> PaymentMethod:
    """An existing payment method, or a fresh one from a test id or a card token
    (as Stripe does)."""
    if pm_id.startswith("tok_") and lookup_test_payment_method(pm_id) is None:
        return from_card_token(
            session,
            token_id=pm_id,
            account_id=account_id,
            livemode=livemode,
            now=now,
            param=param,
        )
    if lookup_test_payment_method(pm_id) is not None and not livemode:
        return from_test_id(
            session,
            pm_id=pm_id,
            account_id=account_id,
            livemode=livemode,
            now=now,
            pepper=pepper,
            param=param,
        )
    return get(session, account_id=account_id, livemode=livemode, pm_id=pm_id, param=param)


def update_fields(pm: PaymentMethod, values: dict[str, Any]) -> dict[str, Any]:
    previous: dict[str, Any] = {}
    if "billing_details" in values and values["billing_details"] is not None:
        merged = {**pm.billing_details, **values["billing_details"]}
        if merged != pm.billing_details:
            previous["billing_details"] = render_billing(pm.billing_details)
            pm.billing_details = merged
    card = values.get("card") or {}
    for f in ("exp_month", "exp_year"):
        if card.get(f) is not None and card[f] != getattr(pm, f):
            previous.setdefault("card", {})[f] = getattr(pm, f)
            setattr(pm, f, card[f])
    if "metadata" in values:
        merged_md = merge_metadata(pm.metadata_, values["metadata"])
        if merged_md != pm.metadata_:
            previous["metadata"] = dict(pm.metadata_)
            pm.metadata_ = merged_md
    return previous


_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


def render_billing(bd: dict[str, Any]) -> dict[str, Any]:
    addr = bd.get("address") or {}
    return {
        "address": {k: addr.get(k) for k in _ADDRESS_KEYS},
        "email": bd.get("email"),
        "name": bd.get("name"),
        "phone": bd.get("phone"),
    }


def card_details(pm: PaymentMethod) -> dict[str, Any]:
    return {
        "brand": pm.brand,
        "checks": {
            "address_line1_check": None,
            "address_postal_code_check": None,
            "cvc_check": None,
        },
        "country": pm.country,
        "display_brand": pm.brand,
        "exp_month": pm.exp_month,
        "exp_year": pm.exp_year,
        "fingerprint": pm.fingerprint,
        "funding": pm.funding,
        "generated_from": None,
        "last4": pm.last4,
        "networks": {"available": [pm.brand], "preferred": None},
        "three_d_secure_usage": {"supported": True},
        "wallet": None,
    }


_LEGACY_BRANDS = {
    "visa": "Visa",
    "mastercard": "MasterCard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
}


_HOLDER_FIELDS = (
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)


def _billing_from_holder(holder: dict[str, Any]) -> dict[str, Any]:
    """A card token's name and address, as a payment method's billing_details."""
    address = {
        "line1": holder.get("address_line1"),
        "line2": holder.get("address_line2"),
        "city": holder.get("address_city"),
        "state": holder.get("address_state"),
        "postal_code": holder.get("address_zip"),
        "country": holder.get("address_country"),
    }
    out: dict[str, Any] = {}
    if holder.get("name"):
        out["name"] = holder["name"]
    if any(address.values()):
        out["address"] = {k: v for k, v in address.items() if v is not None}
    return out


def render_token(tok: CardToken) -> dict[str, Any]:
    """Stripe's Token object; its ``card`` uses the legacy Card shape."""
    return {
        "id": tok.id,
        "object": "token",
        "card": {
            "id": "card_" + tok.id.removeprefix("tok_"),
            "object": "card",
            **{f: tok.holder.get(f) for f in _HOLDER_FIELDS},
            "address_line1_check": "unchecked" if tok.holder.get("address_line1") else None,
            "address_zip_check": "unchecked" if tok.holder.get("address_zip") else None,
            "cvc_check": None,
            "currency": tok.holder.get("currency"),
            "dynamic_last4": None,
            "tokenization_method": None,
            "wallet": None,
            "brand": _LEGACY_BRANDS.get(tok.brand, "Unknown"),
            "country": tok.country,
            "exp_month": tok.exp_month,
            "exp_year": tok.exp_year,
            "fingerprint": tok.fingerprint,
            "funding": tok.funding,
            "last4": tok.last4,
            "metadata": {},
        },
        "client_ip": tok.client_ip,
        "created": tok.created,
        "livemode": tok.livemode,
        "type": "card",
        "used": tok.used,
    }


def render(pm: PaymentMethod) -> dict[str, Any]:
    return {
        "id": pm.id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": render_billing(pm.billing_details),
        "card": card_details(pm),
        "created": pm.created,
        "customer": pm.customer_id,
        "livemode": pm.livemode,
        "metadata": pm.metadata_,
        "type": pm.type,
    }
