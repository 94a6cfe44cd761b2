"""Stripe-shaped JSON for payment intents, charges and refunds."""

from __future__ import annotations

from typing import Any

from paywarden.payments.models import Charge, PaymentIntent, Refund


def render_charge(ch: Charge) -> dict[str, Any]:
    return {
        "id": ch.id,
        "object": "charge",
        "amount": ch.amount,
        "amount_captured": ch.amount_captured,
        "amount_refunded": ch.amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": None,
        "calculated_statement_descriptor": None,
        "captured": ch.captured,
        "created": ch.created,
        "currency": ch.currency,
        "customer": ch.customer_id,
        "description": ch.description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": ch.failure_code,
        "failure_message": ch.failure_message,
        "fraud_details": {"user_report": ch.fraud_user_report} if ch.fraud_user_report else {},
        "livemode": ch.livemode,
        "metadata": ch.metadata_,
        "on_behalf_of": None,
        "outcome": ch.outcome,
        "paid": ch.paid,
        "payment_intent": ch.payment_intent_id,
        "payment_method": ch.payment_method_id,
        "payment_method_details": ch.payment_method_details,
        "receipt_email": None,
        "receipt_url": None,
        "refunded": ch.captured and ch.amount_refunded >= ch.amount_captured > 0,
        "review": ch.review_id,
        "statement_descriptor": None,
        "status": ch.status,
        "transfer_data": None,
        "transfer_group": None,
    }


def render_intent(pi: PaymentIntent, latest_charge: Charge | None = None) -> dict[str, Any]:
    return {
        "id": pi.id,
        "object": "payment_intent",
        "amount": pi.amount,
        "amount_capturable": pi.amount_capturable,
        "amount_details": {"tip": {}},
        "amount_received": pi.amount_received,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": pi.automatic_payment_methods,
        "canceled_at": pi.canceled_at,
        "cancellation_reason": pi.cancellation_reason,
        "capture_method": pi.capture_method,
        "client_secret": pi.client_secret,
        "confirmation_method": pi.confirmation_method,
        "created": pi.created,
        "currency": pi.currency,
        "customer": pi.customer_id,
        "description": pi.description,
        "last_payment_error": pi.last_payment_error,
        "latest_charge": render_charge(latest_charge)
        if latest_charge is not None
        else pi.latest_charge_id,
        "livemode": pi.livemode,
        "metadata": pi.metadata_,
        "next_action": pi.next_action,
        "on_behalf_of": None,
        "payment_method": pi.payment_method_id,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": pi.receipt_email,
        "review": pi.review_id,
        "setup_future_usage": pi.setup_future_usage,
        "shipping": None,
        "source": None,
        "statement_descriptor": pi.statement_descriptor,
        "statement_descriptor_suffix": None,
        "status": pi.status,
        "transfer_data": None,
        "transfer_group": None,
    }


def render_refund(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "refund",
        "amount": r.amount,
        "balance_transaction": None,
        "charge": r.charge_id,
        "created": r.created,
        "currency": r.currency,
        "destination_details": {
            "card": {"reference_status": "pending", "type": "refund"},
            "type": "card",
        },
        "failure_reason": r.failure_reason,
        "livemode": r.livemode,
        "metadata": r.metadata_,
        "payment_intent": r.payment_intent_id,
        "reason": r.reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": r.status,
        "transfer_reversal": None,
    }
