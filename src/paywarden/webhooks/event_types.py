"""Event types Paywarden emits, with Stripe's names, and endpoint subscription matching."""

from __future__ import annotations

from collections.abc import Iterable

WILDCARD = "*"

EMITTED_EVENT_TYPES: tuple[str, ...] = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.updated",
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.requires_action",
    "payment_intent.amount_capturable_updated",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.pending",
    "charge.succeeded",
    "charge.failed",
    "charge.captured",
    "charge.refunded",
    "charge.updated",
    "charge.refund.updated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "review.opened",
    "review.closed",
)

# Every value accepted in a webhook endpoint's ``enabled_events``.
EVENT_TYPES: tuple[str, ...] = (WILDCARD, *EMITTED_EVENT_TYPES)

_VALID = frozenset(EVENT_TYPES)


def is_valid_event_type(value: str) -> bool:
    return value in _VALID


def subscribes_to(enabled_events: Iterable[str], event_type: str) -> bool:
    """Whether an endpoint with ``enabled_events`` should receive ``event_type``."""
    return any(e in (WILDCARD, event_type) for e in enabled_events)
