from __future__ import annotations

from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from paywarden.db import PK, Base, ListableMixin


class PaymentMethod(ListableMixin, Base):
    """A card payment method. Holds display attributes and a reference the
    acquirer understands; never a card number."""

    __tablename__ = "payment_methods"
    type: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str | None] = mapped_column(index=True)
    brand: Mapped[str] = mapped_column(String(32))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int]
    exp_year: Mapped[int]
    funding: Mapped[str] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(String(2))
    fingerprint: Mapped[str] = mapped_column(String(32))
    # "test:<ref>" (a sandbox test card) or "vault:<token>" (a vaulted card).
    card_ref: Mapped[str] = mapped_column(String(64))
    bin: Mapped[str | None] = mapped_column(String(8))
    billing_details: Mapped[dict[str, Any]]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")


class CardToken(ListableMixin, Base):
    """A single-use card token (``tok_…``, Stripe's Tokens API). Card display
    data and the vault reference only; consumed when a payment method is made
    from it."""

    __tablename__ = "card_tokens"
    used: Mapped[bool] = mapped_column(default=False)
    client_ip: Mapped[str | None] = mapped_column(String(64))
    brand: Mapped[str] = mapped_column(String(32))
    bin: Mapped[str | None] = mapped_column(String(8))
    last4: Mapped[str] = mapped_column(String(4))
    exp_month: Mapped[int]
    exp_year: Mapped[int]
    funding: Mapped[str] = mapped_column(String(16))
    country: Mapped[str | None] = mapped_column(String(2))
    fingerprint: Mapped[str] = mapped_column(String(32))
    card_ref: Mapped[str] = mapped_column(String(64))
    # Cardholder name and address as given with the card (Stripe's card[name],
    # card[address_*]); they become the payment method's billing_details.
    holder: Mapped[dict[str, Any]] = mapped_column(default=dict)


class PaymentIntent(ListableMixin, Base):
    __tablename__ = "payment_intents"
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    capture_method: Mapped[str] = mapped_column(String(24))
    confirmation_method: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str | None] = mapped_column(index=True)
    payment_method_id: Mapped[str | None]
    description: Mapped[str | None] = mapped_column(String(1000))
    receipt_email: Mapped[str | None] = mapped_column(String(512))
    statement_descriptor: Mapped[str | None] = mapped_column(String(22))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    client_secret: Mapped[str] = mapped_column(String(96))
    amount_capturable: Mapped[int] = mapped_column(default=0)
    amount_received: Mapped[int] = mapped_column(default=0)
    canceled_at: Mapped[int | None]
    cancellation_reason: Mapped[str | None] = mapped_column(String(40))
    latest_charge_id: Mapped[str | None]
    last_payment_error: Mapped[dict[str, Any] | None]
    next_action: Mapped[dict[str, Any] | None]
    return_url: Mapped[str | None] = mapped_column(String(2048))
    setup_future_usage: Mapped[str | None] = mapped_column(String(16))
    automatic_payment_methods: Mapped[dict[str, Any] | None]
    # The fraud engine's latest assessment of this intent (score, level, rule,
    # reasons, decision); copied onto the charge's ``outcome``.
    risk: Mapped[dict[str, Any] | None]
    # The review that held this intent's payment (``radar_reviews``), if any.
    review_id: Mapped[str | None] = mapped_column(String(40))
    # Bumped on every state change; guards against lost updates.
    version: Mapped[int] = mapped_column(default=0)


class Charge(ListableMixin, Base):
    __tablename__ = "charges"
    payment_intent_id: Mapped[str] = mapped_column(index=True)
    payment_method_id: Mapped[str]
    customer_id: Mapped[str | None]
    amount: Mapped[int]
    amount_captured: Mapped[int] = mapped_column(default=0)
    amount_refunded: Mapped[int] = mapped_column(default=0)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    captured: Mapped[bool] = mapped_column(default=False)
    paid: Mapped[bool] = mapped_column(default=False)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[dict[str, Any] | None]
    acquirer: Mapped[str | None] = mapped_column(String(64))
    acquirer_reference: Mapped[str | None] = mapped_column(String(64))
    authentication_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(1000))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    payment_method_details: Mapped[dict[str, Any]]
    review_id: Mapped[str | None] = mapped_column(String(40))
    # The merchant's own fraud report (``fraud_details.user_report``): fraudulent | safe.
    fraud_user_report: Mapped[str | None] = mapped_column(String(16))


class Refund(ListableMixin, Base):
    __tablename__ = "refunds"
    charge_id: Mapped[str] = mapped_column(index=True)
    payment_intent_id: Mapped[str] = mapped_column(index=True)
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed | canceled
    reason: Mapped[str | None] = mapped_column(String(40))
    failure_reason: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata")
    acquirer_reference: Mapped[str | None] = mapped_column(String(64))


class AcquirerAttempt(Base):
    """One call to an acquirer, recorded *before* the call and settled after.

    ``status`` is ``pending`` while the call is in flight, ``unknown`` when the
    call timed out after sending (the reconciler resolves it), else final.
    """

    __tablename__ = "acquirer_attempts"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "acquirer"),
        Index("ix_acquirer_attempts_status", "status"),
    )
    pk: Mapped[int] = mapped_column(PK, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(unique=True)
    account_id: Mapped[str]
    livemode: Mapped[bool]
    operation: Mapped[str] = mapped_column(String(16))  # authorize | capture | void | refund
    payment_intent_id: Mapped[str] = mapped_column(ForeignKey("payment_intents.id"), index=True)
    charge_id: Mapped[str | None]
    refund_id: Mapped[str | None]
    acquirer: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    amount: Mapped[int]
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32))
    request: Mapped[dict[str, Any]]
    response: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(String(255))
    created: Mapped[int]
    updated: Mapped[int]
    reconcile_after: Mapped[int | None]
    reconcile_count: Mapped[int] = mapped_column(default=0)
