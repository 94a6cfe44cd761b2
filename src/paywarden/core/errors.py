"""Stripe-shaped API errors.

Exception tree::

    StripeError                   -> {"error": {type, code, decline_code, message, param}}
      InvalidRequestError   400   invalid_request_error
        ParameterError      400   invalid_request_error (validation: never stored)
        ResourceMissingError 404  invalid_request_error / resource_missing
        ConflictError       409   invalid_request_error (concurrent use)
      IdempotencyError      400   idempotency_error
      AuthenticationError   401   invalid_request_error (Stripe reports 401 this way)
      CardError             402   card_error
      PermissionDeniedError 403   invalid_request_error
      RateLimitError        429   invalid_request_error / rate_limit
      ApiError              500   api_error

Messages are written for the merchant: they never carry stack traces, SQL, or
anything the caller did not send (and never a card number, even one they sent).
"""

from __future__ import annotations

from typing import Any


class StripeError(Exception):
    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.extra = extra or {}
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code is not None:
            body["code"] = self.code
        if self.param is not None:
            body["param"] = self.param
        if self.decline_code is not None:
            body["decline_code"] = self.decline_code
        body.update(self.extra)
        return {"error": body}


class InvalidRequestError(StripeError):
    status = 400


class ParameterError(InvalidRequestError):
    """The request's parameters are invalid. Nothing was executed, so Stripe's
    idempotency contract does not store this response: a corrected retry may
    reuse the key."""


class ResourceMissingError(InvalidRequestError):
    status = 404

    def __init__(self, kind: str, object_id: str, *, param: str | None = "id") -> None:
        # The id is echoed only after it was validated as a short opaque token.
        super().__init__(
            f"No such {kind}: '{_safe_echo(object_id)}'", code="resource_missing", param=param
        )


class ConflictError(InvalidRequestError):
    status = 409


class IdempotencyError(StripeError):
    status = 400
    type = "idempotency_error"


class AuthenticationError(StripeError):
    status = 401


class CardError(StripeError):
    status = 402
    type = "card_error"


class PermissionDeniedError(StripeError):
    status = 403


class RateLimitError(StripeError):
    status = 429

    def __init__(self, message: str = "Too many requests.", **kw: Any) -> None:
        kw.setdefault("code", "rate_limit")
        super().__init__(message, **kw)


class ApiError(StripeError):
    status = 500
    type = "api_error"


class ServiceUnavailableError(ApiError):
    """A dependency (the card vault) is down. Never stored for idempotent replay:
    the same request must work once the dependency is back."""

    status = 503


def _safe_echo(value: str) -> str:
    """Echo a caller-supplied token only if it cannot carry a card number or markup."""
    digits = sum(ch.isdigit() for ch in value)
    if len(value) > 64 or digits >= 12 or not all(ch.isalnum() or ch in "_-" for ch in value):
        return "<redacted>"
    return value
