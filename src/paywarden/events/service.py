"""Events: recorded in the caller's transaction (the outbox), rendered as Stripe's."""

from __future__ import annotations

from typing import Any

from paywarden.core.ids import new_id
from paywarden.events.models import Event

API_VERSION = "2024-06-20"


def new_event(
    *,
    account_id: str,
    livemode: bool,
    type: str,
    obj: dict[str, Any],
    now: int,
    previous_attributes: dict[str, Any] | None = None,
    request_id: str | None = None,
    idempotency_key: str | None = None,
) -> Event:
    """A new event. The caller writes it in the same transaction as the change
    it describes (the outbox): ``session.add`` or :func:`paywarden.rows.insert_now`."""
    data: dict[str, Any] = {"object": obj}
    if previous_attributes:
        data["previous_attributes"] = previous_attributes
    return Event(
        id=new_id("evt"),
        account_id=account_id,
        livemode=livemode,
        created=now,
        type=type,
        api_version=API_VERSION,
        data=data,
        request_id=request_id,
        idempotency_key=idempotency_key,
        pending_webhooks=0,
        dispatched=False,
    )


def render_event(ev: Event) -> dict[str, Any]:
    return {
        "id": ev.id,
        "object": "event",
        "api_version": ev.api_version,
        "created": ev.created,
        "data": ev.data,
        "livemode": ev.livemode,
        "pending_webhooks": ev.pending_webhooks,
        "request": {"id": ev.request_id, "idempotency_key": ev.idempotency_key},
        "type": ev.type,
    }
