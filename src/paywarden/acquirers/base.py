"""The acquirer connector interface.

A connector speaks to one acquirer. Every call carries *our* idempotency key, so
repeating a call (a retry, a reconciliation) never moves money twice.

Failure semantics matter more than anything else here:

* :class:`AcquirerUnavailable` — the acquirer certainly did not act (connection
  refused, 503 before processing). Safe to fail over to another acquirer.
* :class:`AcquirerOutcomeUnknown` — the request may have been acted on (timeout
  after sending, connection dropped mid-response, 500). Never fail over: only
  the same acquirer, asked with the same idempotency key, can tell us.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class AcquirerError(Exception):
    pass


class AcquirerUnavailable(AcquirerError):
    """The acquirer did not process the request. Failover is safe."""


class AcquirerOutcomeUnknown(AcquirerError):
    """The request may have been processed. Reconcile with the same acquirer."""


class AcquirerNotFound(AcquirerError):
    """A lookup found no record for this idempotency key."""


class CardVaultUnavailable(AcquirerError):
    """The card vault, which forwards the card to the acquirer, could not be
    reached: nothing was sent. Not the acquirer's fault, so it does not count
    against the acquirer's circuit breaker, and failing over would not help."""


@dataclass(frozen=True)
class CardRef:
    """What the acquirer needs to identify a card. ``test_ref`` names one of the
    sandbox's test cards (``"visa"``, ``"chargeDeclined"``); a vaulted card has
    ``vault_token`` (and its tenant, ``vault_account``) instead, and the vault
    fills in the card number on its way to the acquirer. Never a PAN here."""

    test_ref: str | None = None
    vault_token: str | None = None
    vault_account: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None


@dataclass(frozen=True)
class AuthorizationRequest:
    amount: int
    currency: str
    capture: bool
    card: CardRef
    merchant_reference: str  # our payment intent id
    description: str | None = None
    authentication_id: str | None = None  # a completed 3-D Secure session
    return_url: str | None = None  # where the 3DS page sends the customer afterwards
    # The fraud engine asks for 3-D Secure whatever the card's issuer would do.
    request_three_d_secure: bool = False


@dataclass(frozen=True)
class AuthorizationResult:
    """``status``: authorized | captured | declined | requires_authentication."""

    reference: str  # the acquirer's own id for this authorization
    status: str
    amount: int
    amount_captured: int
    currency: str
    decline_code: str | None = None
    network_status: str = "approved_by_network"
    message: str | None = None
    authentication_id: str | None = None
    authentication_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaptureResult:
    reference: str
    status: str  # captured | failed
    amount_captured: int
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RefundResult:
    reference: str
    status: str  # succeeded | failed
    amount: int
    failure_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthenticationStatus:
    id: str
    status: str  # pending | authenticated | failed


class AcquirerConnector(Protocol):
    name: str

    def authorize(
        self, req: AuthorizationRequest, *, idempotency_key: str
    ) -> AuthorizationResult: ...

    def capture(self, reference: str, amount: int, *, idempotency_key: str) -> CaptureResult: ...

    def void(self, reference: str, *, idempotency_key: str) -> AuthorizationResult: ...

    def refund(self, reference: str, amount: int, *, idempotency_key: str) -> RefundResult: ...

    def lookup_authorization(self, idempotency_key: str) -> AuthorizationResult:
        """The acquirer's own record of an authorize call; AcquirerNotFound if none."""
        ...

    def lookup_refund(self, idempotency_key: str) -> RefundResult: ...

    def authentication_status(self, authentication_id: str) -> AuthenticationStatus: ...

    def close(self) -> None: ...
