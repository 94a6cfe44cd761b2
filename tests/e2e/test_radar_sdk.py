"""Radar value lists through the official Stripe SDK against the running stack."""

from __future__ import annotations

import uuid

import pytest
import stripe


def test_value_lists_with_the_sdk(client: stripe.StripeClient) -> None:
    alias = f"blocked_emails_{uuid.uuid4().hex[:8]}"
    vl = client.v1.radar.value_lists.create(
        params={"alias": alias, "name": "Blocked emails", "item_type": "email"}
    )
    assert vl.id.startswith("rsl_") and vl.item_type == "email"
    item = client.v1.radar.value_list_items.create(
        params={"value_list": vl.id, "value": "Fraudster@Example.com"}
    )
    assert item.value == "fraudster@example.com"
    listed = client.v1.radar.value_list_items.list(params={"value_list": vl.id})
    assert [i.id for i in listed.data] == [item.id]
    found = client.v1.radar.value_lists.list(params={"alias": alias})
    assert [x.id for x in found.data] == [vl.id]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.radar.value_list_items.create(params={"value_list": vl.id, "value": "nope"})
    deleted = client.v1.radar.value_list_items.delete(item.id)
    assert deleted.deleted is True
    assert client.v1.radar.value_lists.delete(vl.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.radar.value_lists.retrieve(vl.id)


def test_the_review_queue_with_the_sdk(client: stripe.StripeClient) -> None:
    amount = 4000 + uuid.uuid4().int % 999  # a rule of this test's own
    client.raw_request(
        "post",
        "/v1/paywarden/fraud/rules",
        rule=f"Review if :amount: = {amount}",
        reason="e2e: hold this amount for an analyst",
    )
    pi = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert pi.status == "requires_capture"
    charge = client.v1.charges.retrieve(str(pi.latest_charge))
    assert charge.outcome is not None and charge.outcome.type == "manual_review"
    assert charge.outcome.rule is not None  # the review rule decided
    review_id = str(charge.review)
    queue = client.v1.reviews.list(params={"limit": 100})
    assert review_id in [r.id for r in queue.data]
    review = client.v1.reviews.retrieve(review_id)
    assert review.open is True and review.payment_intent == pi.id
    approved = client.v1.reviews.approve(review_id)
    assert approved.open is False and approved.closed_reason == "approved"
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_a_blocked_payment_with_the_sdk(client: stripe.StripeClient) -> None:
    amount = 6000 + uuid.uuid4().int % 999
    client.raw_request(
        "post",
        "/v1/paywarden/fraud/rules",
        rule=f"Block if :amount: = {amount}",
        reason="e2e: block this amount",
    )
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "payment_method": "pm_card_visa",
                "confirm": True,
            }
        )
    assert caught.value.code == "card_declined"
    assert caught.value.error is not None and caught.value.error.decline_code == "fraudulent"
