"""Stripe's idempotency contract for POST requests."""
