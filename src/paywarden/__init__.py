"""Paywarden: a self-hosted, security-first, Stripe-compatible payment API gateway."""

__version__ = "0.1.0"
