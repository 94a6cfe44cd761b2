"""Customers: create, retrieve, update, delete, list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from paywarden.core.errors import ResourceMissingError
from paywarden.core.ids import new_id, random_base62
from paywarden.customers.models import Customer
from paywarden.http.params import merge_metadata
from paywarden.payments.models import PaymentMethod

FIELDS = ("email", "name", "phone", "description", "address")


def create(
    session: Session, *, account_id: str, livemode: bool, now: int, values: dict[str, Any]
) -> Customer:
    c = Customer(
        id=new_id("cus", 14),
        account_id=account_id,
        livemode=livemode,
        created=now,
        metadata_=merge_metadata({}, values.get("metadata")),
        invoice_prefix=random_base62(8).upper(),
        deleted=False,
        **{f: values.get(f) for f in FIELDS},
    )
    session.add(c)
    session.flush()
    return c


def get(
    session: Session,
    *,
    account_id: str,
    livemode: bool,
    customer_id: str,
    include_deleted: bool = False,
    for_update: bool = False,
) -> Customer:
    q = select(Customer).where(
        Customer.id == customer_id, Customer.account_id == account_id, Customer.livemode == livemode
    )
    if for_update:
        q = q.with_for_update()
    c = session.scalar(q)
    if c is None or (c.deleted and not include_deleted):
        raise ResourceMissingError("customer", customer_id)
    return c


def update_fields(c: Customer, values: dict[str, Any]) -> dict[str, Any]:
    """Apply an update; return Stripe's ``previous_attributes``."""
    previous: dict[str, Any] = {}
    for f in FIELDS:
        if f in values and getattr(c, f) != values[f]:
            previous[f] = getattr(c, f)
            setattr(c, f, values[f])
    if "metadata" in values:
        merged = merge_metadata(c.metadata_, values["metadata"])
        if merged != c.metadata_:
            previous["metadata"] = dict(c.metadata_)
            c.metadata_ = merged
    return previous


def delete(session: Session, c: Customer) -> None:
    c.deleted = True
    # Stripe detaches a deleted customer's payment methods.
    session.execute(
        update(PaymentMethod)
        .where(PaymentMethod.customer_id == c.id, PaymentMethod.account_id == c.account_id)
        .values(customer_id=None)
    )


def render(c: Customer) -> dict[str, Any]:
    if c.deleted:
        return {"id": c.id, "object": "customer", "deleted": True}
    return {
        "id": c.id,
        "object": "customer",
        "address": c.address,
        "balance": 0,
        "created": c.created,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": c.description,
        "email": c.email,
        "invoice_prefix": c.invoice_prefix,
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": c.livemode,
        "metadata": c.metadata_,
        "name": c.name,
        "phone": c.phone,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }
