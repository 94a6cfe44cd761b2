"""HTTP plumbing shared by the gateway's routes: Stripe-style form decoding,
parameter validation, the error envelope, authentication and idempotency."""
