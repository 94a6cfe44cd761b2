"""Radar reviews (``prv_…``): payments held for an analyst, in Stripe's shape.

A payment the fraud engine sends to review is authorized but not captured, and
its intent waits in ``requires_capture`` with the review open. The analyst
approves it (``POST /v1/reviews/{id}/approve``: an automatic-capture payment is
then captured), or cancels the intent (the authorization is voided; the review
closes as ``canceled``). While the review is open the merchant cannot capture
around it: funds move only once a person has looked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from paywarden.core.errors import InvalidRequestError
from paywarden.fraud.models import FraudLabel, Review
from paywarden.listing import get_owned

CLOSED_REASONS = ("approved", "refunded", "refunded_as_fraud", "disputed", "canceled")


def render_review(r: Review) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "review",
        "billing_zip": None,
        "charge": r.charge_id,
        "closed_reason": r.closed_reason,
        "created": r.created,
        "ip_address": r.ip_address,
        "ip_address_location": {"country": r.ip_country} if r.ip_country else None,
        "livemode": r.livemode,
        "open": r.open,
        "opened_reason": r.opened_reason,
        "payment_intent": r.payment_intent_id,
        "reason": r.reason,
        "session": r.session,
    }


def render_label(fl: FraudLabel) -> dict[str, Any]:
    return {
        "id": fl.id,
        "object": "paywarden.fraud_report",
        "charge": fl.charge_id,
        "payment_intent": fl.payment_intent_id,
        "label": fl.label,
        "source": fl.source,
        "created": fl.created,
        "paid_at": fl.paid_at,
        # The label delay, explicit: training sees a label only this long after the payment.
        "delay_seconds": fl.created - fl.paid_at,
        "livemode": fl.livemode,
    }


def get(s: Session, *, account_id: str, livemode: bool, review_id: str) -> Review:
    return get_owned(s, Review, review_id, account_id=account_id, livemode=livemode, kind="review")


def open_review_for(s: Session, payment_intent_id: str) -> Review | None:
    return s.scalar(
        select(Review).where(Review.payment_intent_id == payment_intent_id, Review.open.is_(True))
    )


def close(r: Review, *, reason: str, now: int, actor: str) -> None:
    if reason not in CLOSED_REASONS:
        raise ValueError(f"unknown closed reason {reason!r}")
    if not r.open:
        raise InvalidRequestError(
            f"This review is already closed ({r.closed_reason}).", code="review_closed"
        )
    r.open = False
    r.closed_reason = reason
    r.reason = reason
    r.closed_at = now
    r.closed_by = actor[:100]
