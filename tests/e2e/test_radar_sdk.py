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
