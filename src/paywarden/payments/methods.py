"""Payment methods. Until the card vault lands, cards come only from Stripe's
documented test payment methods and tokens (``pm_card_visa``, ``tok_visa``…);
raw card numbers are refused before anything is parsed or stored."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from paywarden.core.errors import ResourceMissingError
from paywarden.core.ids import new_id
from paywarden.core.secrets import Secret
from paywarden.http.params import merge_metadata
from paywarden.payments.models import PaymentMethod
from paywarden.payments.test_methods import lookup_test_payment_method


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


def get(
    session: Session,
    *,
    account_id: str,
    livemode: bool,
    pm_id: str,
    param: str = "id",
    for_update: bool = False,
) -> PaymentMethod:
    q = select(PaymentMethod).where(
        PaymentMethod.id == pm_id,
        PaymentMethod.account_id == account_id,
        PaymentMethod.livemode == livemode,
    )
    if for_update:
        q = q.with_for_update()
    pm = session.scalar(q)
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
    """An existing payment method, or a fresh one from a test id (as Stripe does)."""
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
