"""Money-moving flows: confirm, 3-D Secure continuation, capture, cancel, refund.

Every flow has the same three steps, so that no payment is lost or charged twice:

1. **Record** (one write transaction): check the state transition under a row
   lock, move the intent to ``processing`` (which also blocks concurrent
   operations on it), and insert an :class:`AcquirerAttempt` carrying the
   idempotency key that the acquirer will see.
2. **Call** the acquirer outside any transaction. A connector error that proves
   nothing happened allows failover; an unknown outcome does not.
3. **Settle** (one write transaction): apply the result, write the events
   (outbox) in the same transaction. An unknown outcome leaves the attempt
   ``unknown`` for the reconciler, which asks the same acquirer with the same key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from paywarden import rows
from paywarden.acquirers.base import (
    AcquirerConnector,
    AcquirerError,
    AcquirerOutcomeUnknown,
    AcquirerUnavailable,
    AuthorizationRequest,
    AuthorizationResult,
    CardRef,
    CardVaultUnavailable,
)
from paywarden.acquirers.router import AcquirerRouter
from paywarden.core.clock import Clock
from paywarden.core.errors import CardError, InvalidRequestError, ResourceMissingError, StripeError
from paywarden.core.ids import new_id
from paywarden.db import Database
from paywarden.events.service import new_event
from paywarden.fraud import reviews
from paywarden.fraud.models import FraudLabel, Review
from paywarden.fraud.reviews import render_label, render_review
from paywarden.http.params import merge_metadata
from paywarden.payments import methods
from paywarden.payments.models import AcquirerAttempt, Charge, PaymentIntent, PaymentMethod, Refund
from paywarden.payments.render import render_charge, render_intent, render_refund

if TYPE_CHECKING:
    from paywarden.fraud.engine import Decision, FraudEngine

log = logging.getLogger("paywarden.payments")

CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
CANCELABLE = (
    "requires_payment_method",
    "requires_confirmation",
    "requires_action",
    "requires_capture",
)
UPDATABLE = ("requires_payment_method", "requires_confirmation", "requires_action")

# Stripe's customer-facing messages per decline code. Lost/stolen/fraud are
# deliberately generic: the customer must not learn why (the merchant does).
DECLINE_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
    "incorrect_number": "Your card number is incorrect.",
    "card_velocity_exceeded": (
        "Your card was declined for making repeated attempts too frequently or exceeding its "
        "amount limit."
    ),
}
# Decline codes that Stripe reports as the error code itself, not as card_declined.
CODE_IS_DECLINE = ("expired_card", "incorrect_cvc", "processing_error", "incorrect_number")
SELLER_MESSAGES = {
    "fraudulent": "The bank returned the decline code `fraudulent`.",
    "lost_card": "The bank returned the decline code `lost_card`.",
    "stolen_card": "The bank returned the decline code `stolen_card`.",
}


class AcquirerUnavailableError(StripeError):
    status = 503
    type = "api_error"


_PAST = {"confirm": "confirmed", "capture": "captured", "cancel": "canceled", "update": "updated"}


def unexpected_state(
    pi: PaymentIntent, action: str, allowed: tuple[str, ...]
) -> InvalidRequestError:
    return InvalidRequestError(
        f"You cannot {action} this PaymentIntent because it has a status of {pi.status}. "
        f"Only a PaymentIntent with one of the following statuses may be {_PAST[action]}: "
        f"{', '.join(allowed)}.",
        code="payment_intent_unexpected_state",
        extra={"payment_intent": render_intent(pi)},
    )


@dataclass(frozen=True)
class _AuthPlan:
    pi_id: str
    account_id: str
    livemode: bool
    version: int
    request: AuthorizationRequest
    acquirer: str | None  # pinned (3DS continuation) or None (route freely)
    request_id: str | None
    idempotency_key: str | None
    # Routing decided in the first transaction, whose attempt row is already written.
    candidates: tuple[str, ...] = ()
    first_attempt: str | None = None
    # The payment method as the first transaction read it, when the card was
    # sent to the acquirer. Settling records the charge's card details from it
    # (what was actually authorized), without reading it again; a metadata or
    # billing update made meanwhile does not belong on this charge anyway.
    payment_method: PaymentMethod | None = None


@dataclass(frozen=True)
class _ChargeOp:
    attempt_id: str
    key: str
    acquirer: str
    reference: str


_T = TypeVar("_T")


@dataclass(frozen=True)
class _Outcome:
    kind: str  # result | unknown | unavailable
    attempt_id: str | None = None
    acquirer: str | None = None
    result: AuthorizationResult | None = None
    error: str | None = None


# The ORM flows' lookups, built once: building a select and its cache key
# costs about 50 µs a time, more than running it on SQLite.
_INTENT = select(PaymentIntent).where(
    PaymentIntent.id == bindparam("pi_id"),
    PaymentIntent.account_id == bindparam("account_id"),
    PaymentIntent.livemode == bindparam("livemode"),
)
_INTENT_FOR_UPDATE = _INTENT.with_for_update()
_CHARGE = select(Charge).where(Charge.id == bindparam("charge_id"))
_CHARGE_FOR_UPDATE = _CHARGE.with_for_update()
_ATTEMPT = select(AcquirerAttempt).where(AcquirerAttempt.id == bindparam("attempt_id"))

# The settle transaction reads and writes rows through Core (see paywarden.rows).
_T_ATT = AcquirerAttempt.__table__
_T_PI = PaymentIntent.__table__
_T_PM = PaymentMethod.__table__
_ATTEMPT_ROW_FOR_UPDATE = (
    select(_T_ATT).where(_T_ATT.c.id == bindparam("attempt_id")).with_for_update()
)
_INTENT_ROW_FOR_UPDATE = select(_T_PI).where(_T_PI.c.id == bindparam("pi_id")).with_for_update()
_TENANT_INTENT_ROW_FOR_UPDATE = (
    select(_T_PI)
    .where(
        _T_PI.c.id == bindparam("pi_id"),
        _T_PI.c.account_id == bindparam("account_id"),
        _T_PI.c.livemode == bindparam("livemode"),
    )
    .with_for_update()
)
_PM_ROW = select(_T_PM).where(
    _T_PM.c.id == bindparam("pm_id"),
    _T_PM.c.account_id == bindparam("account_id"),
    _T_PM.c.livemode == bindparam("livemode"),
)
# What confirming (up to the acquirer call) may change.
_INTENT_CONFIRMING = (
    "payment_method_id",
    "receipt_email",
    "return_url",
    "capture_method",
    "risk",
    "status",
    "version",
    "next_action",
    "latest_charge_id",
    "last_payment_error",
)
# What settling an authorization may change.
_ATTEMPT_SETTLED = ("status", "response", "updated", "reconcile_after", "charge_id")
_INTENT_SETTLED = (
    "status",
    "version",
    "review_id",
    "next_action",
    "latest_charge_id",
    "last_payment_error",
    "amount_received",
    "amount_capturable",
)


class Payments:
    def __init__(
        self,
        *,
        db: Database,
        router: AcquirerRouter,
        clock: Clock,
        base_url: str,
        reconcile_grace: float,
        fraud: FraudEngine | None = None,
    ) -> None:
        self.fraud = fraud
        self.db = db
        self.router = router
        self.clock = clock
        self.base_url = base_url.rstrip("/")
        self.reconcile_grace = reconcile_grace

    # ---------------------------------------------------------------- helpers
    def _now(self) -> int:
        return int(self.clock.now())

    @staticmethod
    def get_intent(
        s: Session, *, account_id: str, livemode: bool, pi_id: str, for_update: bool = False
    ) -> PaymentIntent:
        pi = s.scalar(
            _INTENT_FOR_UPDATE if for_update else _INTENT,
            {"pi_id": pi_id, "account_id": account_id, "livemode": livemode},
        )
        if pi is None:
            raise ResourceMissingError("payment_intent", pi_id)
        return pi

    @staticmethod
    def get_charge(s: Session, charge_id: str | None, *, for_update: bool = False) -> Charge | None:
        if charge_id is None:
            return None
        return s.scalar(_CHARGE_FOR_UPDATE if for_update else _CHARGE, {"charge_id": charge_id})

    def _event(
        self,
        s: Session,
        pi: PaymentIntent,
        type_: str,
        obj: dict[str, Any],
        *,
        request_id: str | None,
        idempotency_key: str | None,
        previous: dict[str, Any] | None = None,
    ) -> None:
        """Record an event in ``s``'s transaction: an INSERT now (the payment
        flows' outbox writes go straight to Core, see :mod:`paywarden.rows`)."""
        ev = new_event(
            account_id=pi.account_id,
            livemode=pi.livemode,
            type=type_,
            obj=obj,
            now=self._now(),
            previous_attributes=previous,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )
        rows.insert_now(s, ev)

    def _new_attempt(
        self,
        *,
        pi: PaymentIntent,
        operation: str,
        acquirer: str,
        amount: int,
        request: dict[str, Any],
        charge_id: str | None = None,
        refund_id: str | None = None,
    ) -> AcquirerAttempt:
        now = self._now()
        att_id = new_id("att", 24)
        return AcquirerAttempt(
            id=att_id,
            account_id=pi.account_id,
            livemode=pi.livemode,
            operation=operation,
            payment_intent_id=pi.id,
            charge_id=charge_id,
            refund_id=refund_id,
            acquirer=acquirer,
            idempotency_key=f"pw_{att_id}",
            amount=amount,
            currency=pi.currency,
            status="pending",
            request=request,
            response=None,
            error=None,
            created=now,
            updated=now,
            reconcile_after=None,
            reconcile_count=0,
        )

    def _mark_attempt(
        self,
        attempt_id: str,
        status: str,
        *,
        error: str | None = None,
        response: dict[str, Any] | None = None,
        reconcile: bool = False,
        session: Session | None = None,
    ) -> None:
        if session is None:
            with self.db.write() as s:
                self._mark_attempt(
                    attempt_id,
                    status,
                    error=error,
                    response=response,
                    reconcile=reconcile,
                    session=s,
                )
            return
        att = session.scalar(_ATTEMPT, {"attempt_id": attempt_id})
        assert att is not None
        att.status = status
        att.error = error[:255] if error else None
        if response is not None:
            att.response = response
        att.updated = self._now()
        att.reconcile_after = int(self.clock.now() + self.reconcile_grace) if reconcile else None

    # ------------------------------------------------------------------ confirm
    def confirm(
        self,
        *,
        account_id: str,
        livemode: bool,
        pi_id: str,
        values: dict[str, Any],
        pepper: Any,
        request_id: str | None,
        idempotency_key: str | None,
        client_secret: str | None = None,
        risk_context: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Confirm an intent. Raises CardError on a decline (after recording it).

        The fraud engine decides before anything is sent to an acquirer: a block
        ends here (recorded, nothing sent); a 3-D Secure request or a review
        changes what the acquirer is asked for.
        """
        now = self._now()
        blocked: CardError | None = None
        pinned: tuple[str, str] | None = (
            None  # (acquirer, authentication_id) for a 3DS continuation
        )
        pm: PaymentMethod | None = None
        # The intent is read and written as a row (paywarden.rows): a detached
        # instance, changed in memory, written back once at the end.
        with self.db.write() as s:
            pi = rows.load(
                s,
                PaymentIntent,
                _TENANT_INTENT_ROW_FOR_UPDATE,
                {"pi_id": pi_id, "account_id": account_id, "livemode": livemode},
            )
            if pi is None:
                raise ResourceMissingError("payment_intent", pi_id)
            if client_secret is not None:
                check_client_secret(pi, client_secret)
            if pi.status not in CONFIRMABLE:
                raise unexpected_state(pi, "confirm", CONFIRMABLE)
            if values.get("payment_method"):
                pm = methods.resolve(
                    s,
                    account_id=account_id,
                    livemode=livemode,
                    pm_id=values["payment_method"],
                    now=now,
                    pepper=pepper,
                )
                _check_pm_customer(pm, pi)
                pi.payment_method_id = pm.id
            elif pi.status == "requires_action":
                pinned = self._pending_authentication(s, pi)
            for f in ("receipt_email", "return_url", "capture_method"):
                if values.get(f) is not None:
                    setattr(pi, f, values[f])
            if pi.payment_method_id is None:
                raise InvalidRequestError(
                    "You cannot confirm this PaymentIntent because it's missing a payment method. "
                    "Update the PaymentIntent with a payment method and then confirm it again.",
                    code="payment_intent_unexpected_state",
                    param="payment_method",
                )
            if pm is None:
                pm = rows.load(
                    s,
                    PaymentMethod,
                    _PM_ROW,
                    {"pm_id": pi.payment_method_id, "account_id": account_id, "livemode": livemode},
                )
                if pm is None:
                    raise ResourceMissingError("PaymentMethod", pi.payment_method_id, param="id")
            previous_status = pi.status
            if pinned is None and self.fraud is not None:
                decision = self.fraud.assess(
                    s, self._signals(s, pi, pm, risk_context or {}, values)
                )
                pi.risk = decision.to_json()
                if decision.action == "block":
                    # Recorded in this transaction; nothing is sent anywhere.
                    blocked = self._block(s, pi, pm, decision, request_id, idempotency_key)
            elif pinned is None:
                pi.risk = None
            if blocked is None:
                plan = self._start(s, pi, pm, pinned, request_id, idempotency_key)
            rows.update_now(s, pi, _INTENT_CONFIRMING)
            error_on_action = bool(values.get("error_on_requires_action"))
        if blocked is not None:
            raise blocked
        if pinned is not None:
            status = self._authentication_status(pinned[0], pinned[1])
            if status == "pending":
                return self._restore(plan, previous_status)
            if status != "authenticated":
                return self._authentication_failed(plan)
        outcome = self._authorize(plan)
        return self._settle_authorization(plan, outcome, error_on_action=error_on_action)

    def _start(
        self,
        s: Session,
        pi: PaymentIntent,
        pm: PaymentMethod,
        pinned: tuple[str, str] | None,
        request_id: str | None,
        idempotency_key: str | None,
    ) -> _AuthPlan:
        """Move the intent to ``processing`` and record the first attempt."""
        pi.status = "processing"
        pi.version += 1
        pi.last_payment_error = None
        request = self._auth_request(pi, pm, pinned[1] if pinned else None)
        candidates: tuple[str, ...] = ()
        first_attempt = None
        if pinned is None:
            # Record the first attempt in this same transaction: one commit
            # fewer on the hot path, and still written before the call.
            candidates = tuple(c.name for c in self.router.candidates())
            first_attempt = self._add_auth_attempt(s, pi, candidates[0], request)
        return _AuthPlan(
            pi_id=pi.id,
            account_id=pi.account_id,
            livemode=pi.livemode,
            version=pi.version,
            request=request,
            acquirer=pinned[0] if pinned else None,
            request_id=request_id,
            idempotency_key=idempotency_key,
            candidates=candidates,
            first_attempt=first_attempt,
            payment_method=pm,
        )

    # ------------------------------------------------------------ fraud engine
    def _signals(
        self,
        s: Session,
        pi: PaymentIntent,
        pm: PaymentMethod,
        context: dict[str, Any],
        values: dict[str, Any],
    ) -> Any:
        from paywarden.customers.models import Customer
        from paywarden.fraud.engine import PaymentSignals

        email = context.get("email") or pi.receipt_email
        if not email and pi.customer_id:
            email = s.scalar(select(Customer.email).where(Customer.id == pi.customer_id))
        new_card = None
        if pi.customer_id:
            seen = s.scalar(
                select(PaymentMethod.id).where(
                    PaymentMethod.account_id == pi.account_id,
                    PaymentMethod.customer_id == pi.customer_id,
                    PaymentMethod.fingerprint == pm.fingerprint,
                    PaymentMethod.id != pm.id,
                )
            )
            new_card = seen is None and pm.customer_id != pi.customer_id
        return PaymentSignals(
            account_id=pi.account_id,
            livemode=pi.livemode,
            payment_intent_id=pi.id,
            attempt_key=f"{pi.id}:{pi.version}",
            at=self.clock.now(),
            amount=pi.amount,
            currency=pi.currency,
            card_fingerprint=pm.fingerprint,
            card_bin=pm.bin,
            card_country=pm.country,
            card_brand=pm.brand,
            card_funding=pm.funding,
            customer=pi.customer_id,
            email=email,
            ip_address=context.get("ip_address"),
            user_agent=context.get("user_agent"),
            accept_language=context.get("accept_language"),
            device_token=context.get("device_token"),
            is_new_card_on_customer=new_card,
            shared_test_card=pm.card_ref.startswith("test:"),
        )

    def _block(
        self,
        s: Session,
        pi: PaymentIntent,
        pm: PaymentMethod,
        decision: Decision,
        request_id: str | None,
        idempotency_key: str | None,
    ) -> CardError:
        """A blocked payment: a failed charge that was never sent to the network,
        the merchant told why (outcome), the customer told nothing useful."""
        now = self._now()
        by_rule = decision.rule_id is not None and decision.rule_id != "rule_default_highest_risk"
        ch = self._new_charge(pi, pm, None, None, now)
        ch.failure_code = "card_declined"
        ch.failure_message = "Your card was declined."
        ch.outcome = risk_outcome(
            {
                "network_status": "not_sent_to_network",
                "reason": "rule" if by_rule else "highest_risk_level",
                "risk_level": decision.risk_level,
                "risk_score": decision.risk_score,
                "seller_message": (
                    f"Paywarden blocked this payment: rule {decision.rule_id} "
                    f"({decision.rule_predicate})."
                    if by_rule
                    else "Paywarden blocked this payment as too risky."
                ),
                "type": "blocked",
            },
            pi.risk,
        )
        rows.insert_now(s, ch)
        pi.latest_charge_id = ch.id
        pi.status = "requires_payment_method"
        pi.next_action = None
        pi.version += 1
        err = {
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "fraudulent",
            "message": "Your card was declined.",
            "charge": ch.id,
            "payment_method": methods.render(pm),
        }
        pi.last_payment_error = err
        ev: dict[str, Any] = {"request_id": request_id, "idempotency_key": idempotency_key}
        self._event(s, pi, "charge.failed", render_charge(ch), **ev)
        self._event(s, pi, "payment_intent.payment_failed", render_intent(pi), **ev)
        return CardError(
            "Your card was declined.",
            code="card_declined",
            decline_code="fraudulent",
            extra={
                "charge": ch.id,
                "payment_intent": render_intent(pi),
                "payment_method": methods.render(pm),
            },
        )

    def _auth_request(
        self, pi: PaymentIntent, pm: PaymentMethod, authentication_id: str | None
    ) -> AuthorizationRequest:
        kind, _, ref = pm.card_ref.partition(":")
        card = CardRef(
            test_ref=ref if kind == "test" else None,
            vault_token=ref if kind == "vault" else None,
            vault_account=pi.account_id if kind == "vault" else None,
            exp_month=pm.exp_month,
            exp_year=pm.exp_year,
        )
        action = (pi.risk or {}).get("action")
        return AuthorizationRequest(
            amount=pi.amount,
            currency=pi.currency,
            # A payment held for review is authorized only; funds move once approved.
            capture=pi.capture_method != "manual" and review_risk(pi.risk) is None,
            request_three_d_secure=action == "request_3ds",
            card=card,
            merchant_reference=pi.id,
            description=pi.description,
            authentication_id=authentication_id,
            return_url=None,  # filled per attempt (the return URL names the attempt)
        )

    def _pending_authentication(self, s: Session, pi: PaymentIntent) -> tuple[str, str] | None:
        att = s.scalar(
            select(AcquirerAttempt)
            .where(
                AcquirerAttempt.payment_intent_id == pi.id,
                AcquirerAttempt.operation == "authorize",
                AcquirerAttempt.status == "requires_authentication",
            )
            .order_by(AcquirerAttempt.pk.desc())
        )
        if att is None or not att.response or not att.response.get("authentication_id"):
            return None
        return att.acquirer, str(att.response["authentication_id"])

    def _authentication_status(self, acquirer: str, authentication_id: str) -> str:
        try:
            return self.router.get(acquirer).authentication_status(authentication_id).status
        except AcquirerError as exc:
            raise AcquirerUnavailableError(
                "The card network could not be reached to check authentication. Try again.",
                code="acquirer_unavailable",
            ) from exc

    def _restore(self, plan: _AuthPlan, status: str) -> dict[str, Any]:
        with self.db.write() as s:
            pi = self.get_intent(
                s,
                account_id=plan.account_id,
                livemode=plan.livemode,
                pi_id=plan.pi_id,
                for_update=True,
            )
            if pi.status == "processing" and pi.version == plan.version:
                pi.status = status
                pi.version += 1
            return render_intent(pi)

    def _authentication_failed(self, plan: _AuthPlan) -> dict[str, Any]:
        with self.db.write() as s:
            pi = self.get_intent(
                s,
                account_id=plan.account_id,
                livemode=plan.livemode,
                pi_id=plan.pi_id,
                for_update=True,
            )
            pm = methods.get(
                s, account_id=pi.account_id, livemode=pi.livemode, pm_id=str(pi.payment_method_id)
            )
            pi.status = "requires_payment_method"
            pi.version += 1
            pi.next_action = None
            pi.last_payment_error = {
                "type": "invalid_request_error",
                "code": "payment_intent_authentication_failure",
                "message": (
                    "The provided PaymentMethod has failed authentication. You can provide "
                    "payment_method_data or a new PaymentMethod to attempt to fulfill this "
                    "PaymentIntent again."
                ),
                "payment_method": methods.render(pm),
            }
            self._event(
                s,
                pi,
                "payment_intent.payment_failed",
                render_intent(pi),
                request_id=plan.request_id,
                idempotency_key=plan.idempotency_key,
            )
            return render_intent(pi)

    def _authorize(self, plan: _AuthPlan) -> _Outcome:
        """Try acquirers in order. A failed attempt is closed in the same
        transaction that opens the next one (or fails the intent), so a crash
        never leaves an intent ``processing`` without an open attempt."""
        names = [plan.acquirer] if plan.acquirer is not None else list(plan.candidates)
        if not names:
            names = [c.name for c in self.router.candidates()]
        attempt_id = plan.first_attempt
        if attempt_id is None:
            with self.db.write() as s:
                attempt_id = self._add_auth_attempt(
                    s, self._intent(s, plan), names[0], plan.request
                )
        for i, name in enumerate(names):
            conn = self.router.get(name)
            req = self._attempt_request(plan.request, attempt_id)
            key = f"pw_{attempt_id}"
            try:
                result = self._call_with_retry(
                    lambda c=conn, r=req, k=key: c.authorize(r, idempotency_key=k)
                )
            except AcquirerOutcomeUnknown as exc:
                # The charge may have happened: never fail over. Reconcile later.
                self.router.record_failure(name)
                with self.db.write() as s:
                    self._mark_attempt(
                        attempt_id,
                        "unknown",
                        error=f"unknown: {type(exc).__name__}",
                        reconcile=True,
                        session=s,
                    )
                    # The payment stays `processing` until reconciled; tell the merchant.
                    pi = self._intent(s, plan)
                    self._event(
                        s,
                        pi,
                        "payment_intent.processing",
                        render_intent(pi),
                        request_id=plan.request_id,
                        idempotency_key=plan.idempotency_key,
                    )
                return _Outcome("unknown", attempt_id, name)
            except CardVaultUnavailable:
                # Not the acquirer's fault: its breaker stays as it is, and no
                # other acquirer could be reached without the vault either.
                return _Outcome("unavailable", attempt_id, name, error="unavailable: card vault")
            except AcquirerUnavailable as exc:
                self.router.record_failure(name)
                error = f"unavailable: {type(exc).__name__}"
                if i + 1 < len(names):
                    with self.db.write() as s:
                        self._mark_attempt(attempt_id, "failed", error=error, session=s)
                        attempt_id = self._add_auth_attempt(
                            s, self._intent(s, plan), names[i + 1], plan.request
                        )
                    continue
                return _Outcome("unavailable", attempt_id, name, error=error)
            except AcquirerError as exc:
                # The acquirer refused the request itself (4xx): not a decline,
                # and trying elsewhere would not help.
                return _Outcome(
                    "unavailable", attempt_id, name, error=f"rejected: {str(exc)[:200]}"
                )
            self.router.record_success(name)
            return _Outcome("result", attempt_id, name, result)
        raise AssertionError("unreachable: the last candidate returns")

    def _intent(self, s: Session, plan: _AuthPlan) -> PaymentIntent:
        return self.get_intent(
            s, account_id=plan.account_id, livemode=plan.livemode, pi_id=plan.pi_id
        )

    def _attempt_request(self, req: AuthorizationRequest, attempt_id: str) -> AuthorizationRequest:
        # The 3-D Secure return link names the attempt: an unguessable capability.
        return dataclasses.replace(
            req, return_url=f"{self.base_url}/v1/paywarden/3ds/return/{attempt_id}"
        )

    def _add_auth_attempt(
        self, s: Session, pi: PaymentIntent, acquirer: str, req: AuthorizationRequest
    ) -> str:
        att = self._new_attempt(
            pi=pi, operation="authorize", acquirer=acquirer, amount=req.amount, request={}
        )
        att.request = _auth_request_json(self._attempt_request(req, att.id))
        rows.insert_now(s, att)
        return att.id

    @staticmethod
    def _call_with_retry(fn: Any) -> Any:
        """One immediate retry with the same idempotency key on an unknown outcome:
        a lost response is then answered from the acquirer's idempotency record."""
        try:
            return fn()
        except AcquirerOutcomeUnknown:
            try:
                return fn()
            except AcquirerUnavailable as exc:
                # The first try may still have landed: the outcome stays unknown.
                raise AcquirerOutcomeUnknown(str(exc)) from exc

    def _settle_authorization(
        self, plan: _AuthPlan, outcome: _Outcome, *, error_on_action: bool = False
    ) -> dict[str, Any]:
        if outcome.kind == "unknown":
            with self.db.read() as s:
                pi = self.get_intent(
                    s, account_id=plan.account_id, livemode=plan.livemode, pi_id=plan.pi_id
                )
                return render_intent(pi)
        if outcome.kind == "unavailable" or outcome.result is None:
            return self._fail_unavailable(plan, outcome)
        assert outcome.attempt_id is not None and outcome.acquirer is not None
        card_error, body = self.apply_authorization(
            pi_id=plan.pi_id,
            attempt_id=outcome.attempt_id,
            acquirer=outcome.acquirer,
            result=outcome.result,
            request_id=plan.request_id,
            idempotency_key=plan.idempotency_key,
            error_on_action=error_on_action,
            payment_method=plan.payment_method,
        )
        if card_error is not None:
            raise card_error
        return body

    def _fail_unavailable(self, plan: _AuthPlan, outcome: _Outcome) -> dict[str, Any]:
        with self.db.write() as s:
            if outcome.attempt_id is not None:
                self._mark_attempt(outcome.attempt_id, "failed", error=outcome.error, session=s)
            pi = self.get_intent(
                s,
                account_id=plan.account_id,
                livemode=plan.livemode,
                pi_id=plan.pi_id,
                for_update=True,
            )
            pi.status = "requires_payment_method"
            pi.version += 1
            err = {
                "type": "card_error",
                "code": "processing_error",
                "decline_code": "processing_error",
                "message": DECLINE_MESSAGES["processing_error"],
            }
            pi.last_payment_error = err
            self._event(
                s,
                pi,
                "payment_intent.payment_failed",
                render_intent(pi),
                request_id=plan.request_id,
                idempotency_key=plan.idempotency_key,
            )
            body = render_intent(pi)
        raise CardError(
            err["message"],
            code="processing_error",
            decline_code="processing_error",
            extra={"payment_intent": body},
        )

    def apply_authorization(
        self,
        *,
        pi_id: str,
        attempt_id: str,
        acquirer: str,
        result: AuthorizationResult,
        request_id: str | None,
        idempotency_key: str | None,
        error_on_action: bool = False,
        payment_method: PaymentMethod | None = None,
    ) -> tuple[CardError | None, dict[str, Any]]:
        """Settle an authorization result (from a live call or the reconciler).
        ``payment_method``: the intent's, if the caller has it at hand.

        Returns the decline to raise, if any, and the intent as it now stands.

        The hottest transaction of a payment, so it works on rows through Core
        (:mod:`paywarden.rows`): the attempt and the intent are read under a row
        lock as detached instances, changed in memory, and written back with one
        UPDATE each; the charge, review and events are plain INSERTs.
        """
        with self.db.write() as s:
            att = rows.load(s, AcquirerAttempt, _ATTEMPT_ROW_FOR_UPDATE, {"attempt_id": attempt_id})
            assert att is not None
            pi = rows.load(s, PaymentIntent, _INTENT_ROW_FOR_UPDATE, {"pi_id": pi_id})
            assert pi is not None
            if att.status not in ("pending", "unknown"):
                return None, render_intent(pi)  # already settled (e.g. by the reconciler)
            err = self._apply_authorization(
                s,
                att,
                pi,
                acquirer=acquirer,
                result=result,
                request_id=request_id,
                idempotency_key=idempotency_key,
                error_on_action=error_on_action,
                pm=payment_method,
            )
            rows.update_now(s, att, _ATTEMPT_SETTLED)
            rows.update_now(s, pi, _INTENT_SETTLED)
            return err, render_intent(pi)

    def _apply_authorization(
        self,
        s: Session,
        att: AcquirerAttempt,
        pi: PaymentIntent,
        *,
        acquirer: str,
        result: AuthorizationResult,
        request_id: str | None,
        idempotency_key: str | None,
        error_on_action: bool,
        pm: PaymentMethod | None,
    ) -> CardError | None:
        now = self._now()
        att.status = result.status
        att.response = _auth_result_json(result)
        att.updated = now
        att.reconcile_after = None
        if pm is None or pm.id != pi.payment_method_id:
            pm = rows.load(
                s,
                PaymentMethod,
                _PM_ROW,
                {
                    "pm_id": pi.payment_method_id,
                    "account_id": pi.account_id,
                    "livemode": pi.livemode,
                },
            )
            if pm is None:
                raise ResourceMissingError("PaymentMethod", str(pi.payment_method_id))
        ev: dict[str, Any] = {"request_id": request_id, "idempotency_key": idempotency_key}

        if result.status == "requires_authentication":
            if error_on_action:
                return self._decline(
                    s, pi, pm, att, acquirer, "authentication_required", result, ev
                )
            pi.status = "requires_action"
            pi.version += 1
            pi.next_action = {
                "type": "redirect_to_url",
                "redirect_to_url": {
                    "url": result.authentication_url,
                    "return_url": pi.return_url,
                },
            }
            self._event(s, pi, "payment_intent.requires_action", render_intent(pi), **ev)
            return None
        attempt_key = (pi.risk or {}).get("attempt_key")
        if result.status == "declined":
            if self.fraud is not None:
                self.fraud.record_outcome(attempt_key, "declined")
            return self._decline(
                s, pi, pm, att, acquirer, result.decline_code or "generic_decline", result, ev
            )

        if self.fraud is not None:
            self.fraud.record_outcome(attempt_key, "authorized")
        captured = result.status == "captured"
        review_as = review_risk(pi.risk)
        held = not captured and review_as is not None
        ch = self._new_charge(pi, pm, acquirer, result, now)
        ch.status, ch.paid, ch.captured = "succeeded", True, captured
        ch.amount_captured = result.amount_captured if captured else 0
        ch.outcome = _outcome(
            "manual_review" if held else "authorized",
            "approved_by_network",
            _review_reason(review_as) if held else None,
            result,
            "Paywarden placed this payment in review." if held else "Payment complete.",
            review_as if held else pi.risk,
        )
        att.charge_id = ch.id
        pi.latest_charge_id = ch.id
        pi.next_action = None
        pi.version += 1
        review = self._open_review(s, pi, ch, now) if held else None
        rows.insert_now(s, ch)  # after the review: it names it
        self._event(s, pi, "charge.succeeded", render_charge(ch), **ev)
        if review is not None:
            self._event(s, pi, "review.opened", render_review(review), **ev)
        if captured:
            pi.status = "succeeded"
            pi.amount_received = ch.amount_captured
            pi.amount_capturable = 0
            self._event(s, pi, "payment_intent.succeeded", render_intent(pi), **ev)
        else:
            pi.status = "requires_capture"
            pi.amount_capturable = result.amount
            self._event(
                s,
                pi,
                "payment_intent.amount_capturable_updated",
                render_intent(pi),
                **ev,
            )
        return None

    @staticmethod
    def _open_review(s: Session, pi: PaymentIntent, ch: Charge, now: int) -> Review:
        """Hold an authorized payment for an analyst (funds not captured)."""
        risk = pi.risk or {}
        review = Review(
            id=new_id("prv", 24),
            account_id=pi.account_id,
            livemode=pi.livemode,
            created=now,
            charge_id=ch.id,
            payment_intent_id=pi.id,
            open=True,
            opened_reason="rule",
            reason="rule",
            closed_reason=None,
            ip_address=risk.get("ip_address"),
            ip_country=risk.get("ip_country"),
            session={"device": risk.get("device_id")} if risk.get("device_id") else None,
            closed_at=None,
            closed_by=None,
        )
        rows.insert_now(s, review)
        ch.review_id = review.id
        pi.review_id = review.id
        return review

    def _new_charge(
        self,
        pi: PaymentIntent,
        pm: PaymentMethod,
        acquirer: str | None,
        result: AuthorizationResult | None,
        now: int,
    ) -> Charge:
        """A failed charge to fill in; ``result`` None: nothing reached an acquirer."""
        return Charge(
            id=new_id("ch", 24),
            account_id=pi.account_id,
            livemode=pi.livemode,
            created=now,
            payment_intent_id=pi.id,
            payment_method_id=pm.id,
            customer_id=pi.customer_id,
            amount=pi.amount,
            amount_captured=0,
            amount_refunded=0,
            currency=pi.currency,
            status="failed",
            captured=False,
            paid=False,
            failure_code=None,
            failure_message=None,
            outcome=None,
            acquirer=acquirer,
            acquirer_reference=result.reference if result else None,
            authentication_id=result.authentication_id if result else None,
            description=pi.description,
            metadata_=dict(pi.metadata_),
            payment_method_details={"card": methods.card_details(pm), "type": "card"},
        )

    def _decline(
        self,
        s: Session,
        pi: PaymentIntent,
        pm: PaymentMethod,
        att: AcquirerAttempt,
        acquirer: str,
        decline_code: str,
        result: AuthorizationResult,
        ev: dict[str, Any],
    ) -> CardError:
        now = self._now()
        code = decline_code if decline_code in CODE_IS_DECLINE else "card_declined"
        if decline_code == "authentication_required":
            code = "authentication_required"
        message = DECLINE_MESSAGES.get(decline_code, "Your card was declined.")
        ch = self._new_charge(pi, pm, acquirer, result, now)
        ch.failure_code = code
        ch.failure_message = message
        ch.outcome = _outcome(
            "issuer_declined",
            result.network_status or "declined_by_network",
            decline_code,
            result,
            SELLER_MESSAGES.get(
                decline_code, "The bank did not return any further details with this decline."
            ),
            pi.risk,
        )
        rows.insert_now(s, ch)
        att.charge_id = ch.id
        pi.latest_charge_id = ch.id
        pi.status = "requires_payment_method"
        pi.next_action = None
        pi.version += 1
        err = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": message,
            "charge": ch.id,
            "payment_method": methods.render(pm),
        }
        pi.last_payment_error = err
        self._event(s, pi, "charge.failed", render_charge(ch), **ev)
        self._event(s, pi, "payment_intent.payment_failed", render_intent(pi), **ev)
        return CardError(
            message,
            code=code,
            decline_code=decline_code,
            extra={
                "charge": ch.id,
                "payment_intent": render_intent(pi),
                "payment_method": methods.render(pm),
            },
        )

    # ---------------------------------------------------------------- reviews
    def approve_review(
        self,
        *,
        account_id: str,
        livemode: bool,
        review_id: str,
        actor: str,
        request_id: str | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        """Close a review as approved; an automatic-capture payment is then captured."""
        with self.db.write() as s:
            r = reviews.get(s, account_id=account_id, livemode=livemode, review_id=review_id)
            pi = self.get_intent(
                s,
                account_id=account_id,
                livemode=livemode,
                pi_id=r.payment_intent_id,
                for_update=True,
            )
            reviews.close(r, reason="approved", now=self._now(), actor=actor)
            self._event(
                s,
                pi,
                "review.closed",
                render_review(r),
                request_id=request_id,
                idempotency_key=idempotency_key,
            )
            capture = pi.status == "requires_capture" and pi.capture_method != "manual"
        if capture:
            with contextlib.suppress(StripeError):  # the intent records the failure
                self.capture(
                    account_id=account_id,
                    livemode=livemode,
                    pi_id=r.payment_intent_id,
                    amount_to_capture=None,
                    metadata=None,
                    request_id=request_id,
                    idempotency_key=idempotency_key,
                )
        with self.db.read() as s:
            return render_review(
                reviews.get(s, account_id=account_id, livemode=livemode, review_id=review_id)
            )

    def report(
        self,
        *,
        account_id: str,
        livemode: bool,
        charge_id: str,
        label: str,
        actor: str,
        request_id: str | None,
    ) -> dict[str, Any]:
        """A merchant's report on a charge: ``fraudulent``, ``safe`` or ``dispute``."""
        from paywarden.payments.models import Charge as _Charge

        with self.db.write() as s:
            ch = s.scalar(
                select(_Charge).where(
                    _Charge.id == charge_id,
                    _Charge.account_id == account_id,
                    _Charge.livemode == livemode,
                )
            )
            if ch is None:
                raise ResourceMissingError("charge", charge_id, param="charge")
            pi = self.get_intent(
                s, account_id=account_id, livemode=livemode, pi_id=ch.payment_intent_id
            )
            fl = self._label(s, pi, ch, label=label, source="report", actor=actor)
            return render_label(fl)

    def _label(
        self,
        s: Session,
        pi: PaymentIntent,
        ch: Charge,
        *,
        label: str,
        source: str,
        actor: str,
    ) -> FraudLabel:
        """Record a label; fraud reaches the model's entity features (after the
        label delay) and, with auto-block on, the block lists."""
        from paywarden.fraud.engine import auto_block_lists

        now = self._now()
        if label in ("fraudulent", "safe"):
            ch.fraud_user_report = label  # Stripe's charge.fraud_details.user_report
        risk = dict(pi.risk or {})
        pm = s.scalar(select(PaymentMethod).where(PaymentMethod.id == ch.payment_method_id))
        if pm is not None:
            risk.setdefault("card_fingerprint", pm.fingerprint)
        fl = FraudLabel(
            id=new_id("frl", 24),
            account_id=pi.account_id,
            livemode=pi.livemode,
            created=now,
            charge_id=ch.id,
            payment_intent_id=pi.id,
            label=label,
            source=source,
            card_fingerprint=risk.get("card_fingerprint"),
            paid_at=ch.created,
            actor=actor[:100],
        )
        s.add(fl)
        if label in ("fraudulent", "dispute"):
            # An open review stays open: the analyst still approves (funds move)
            # or cancels (the authorization is voided); a report alone does not.
            if self.fraud is not None:
                self.fraud.add_label(pi.id, fraudulent=True, known_at=float(now))
                if self.fraud.auto_block:
                    auto_block_lists(
                        s,
                        account_id=pi.account_id,
                        livemode=pi.livemode,
                        now=now,
                        risk=risk,
                        actor=f"auto:{fl.id}",
                    )
        elif label == "safe" and self.fraud is not None:
            self.fraud.add_label(pi.id, fraudulent=False, known_at=float(now))
        return fl

    # ------------------------------------------------------------ 3DS return
    def three_d_secure_return(self, attempt_id: str) -> tuple[PaymentIntent, str | None]:
        """The customer's browser came back from the ACS. Continue the payment."""
        with self.db.read() as s:
            att = s.scalar(select(AcquirerAttempt).where(AcquirerAttempt.id == attempt_id))
            if att is None or att.operation != "authorize":
                raise ResourceMissingError("authentication session", attempt_id)
            pi = s.scalar(select(PaymentIntent).where(PaymentIntent.id == att.payment_intent_id))
            assert pi is not None
        if pi.status == "requires_action":
            with contextlib.suppress(CardError):  # recorded on the intent for the merchant
                self.confirm(
                    account_id=pi.account_id,
                    livemode=pi.livemode,
                    pi_id=pi.id,
                    values={},
                    pepper=None,
                    request_id=None,
                    idempotency_key=None,
                )
        with self.db.read() as s:
            pi2 = s.scalar(select(PaymentIntent).where(PaymentIntent.id == att.payment_intent_id))
            assert pi2 is not None
            return pi2, pi2.return_url

    # ------------------------------------------------------------------ capture
    def capture(
        self,
        *,
        account_id: str,
        livemode: bool,
        pi_id: str,
        amount_to_capture: int | None,
        metadata: dict[str, str] | None,
        request_id: str | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        with self.db.write() as s:
            pi = self.get_intent(
                s, account_id=account_id, livemode=livemode, pi_id=pi_id, for_update=True
            )
            if pi.status != "requires_capture":
                raise unexpected_state(pi, "capture", ("requires_capture",))
            held = reviews.open_review_for(s, pi.id)
            if held is not None:
                # Funds move only once an analyst has approved the review.
                raise InvalidRequestError(
                    f"This PaymentIntent is held for review ({held.id}); approve the review "
                    "before capturing it, or cancel the PaymentIntent.",
                    code="payment_intent_unexpected_state",
                )
            amount = pi.amount_capturable if amount_to_capture is None else amount_to_capture
            if amount > pi.amount_capturable:
                raise InvalidRequestError(
                    f"The amount to capture ({amount}) is greater than the amount capturable "
                    f"({pi.amount_capturable}).",
                    code="amount_too_large",
                    param="amount_to_capture",
                )
            if metadata is not None:
                pi.metadata_ = merge_metadata(pi.metadata_, metadata)
            op = self._record_charge_operation(s, pi, "capture", amount)
        res = self._call_charge_operation(
            op,
            account_id,
            livemode,
            pi_id,
            "capture",
            lambda conn, ref, key: conn.capture(ref, amount, idempotency_key=key),
        )
        if res is None:  # unknown outcome: the reconciler settles it
            return self._render(account_id, livemode, pi_id)
        attempt_id = op.attempt_id
        self.apply_capture(
            attempt_id=attempt_id,
            amount_captured=res.amount_captured,
            status=res.status,
            raw=res.raw,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )
        return self._render(account_id, livemode, pi_id)

    @staticmethod
    def _open_attempt(s: Session, attempt_id: str) -> AcquirerAttempt | None:
        """Lock an attempt; None if its outcome was already settled."""
        att = s.scalar(
            select(AcquirerAttempt).where(AcquirerAttempt.id == attempt_id).with_for_update()
        )
        assert att is not None
        return att if att.status in ("pending", "unknown") else None

    def _record_charge_operation(
        self, s: Session, pi: PaymentIntent, operation: str, amount: int | None
    ) -> _ChargeOp:
        """Record step for capture/void of the intent's authorized charge."""
        ch = self.get_charge(s, pi.latest_charge_id, for_update=True)
        assert ch is not None
        assert ch.acquirer is not None
        assert ch.acquirer_reference is not None
        pi.status = "processing"
        pi.version += 1
        request: dict[str, Any] = {"reference": ch.acquirer_reference}
        if amount is not None:
            request["amount"] = amount
        att = self._new_attempt(
            pi=pi,
            operation=operation,
            acquirer=ch.acquirer,
            amount=ch.amount if amount is None else amount,
            request=request,
            charge_id=ch.id,
        )
        s.add(att)
        return _ChargeOp(att.id, att.idempotency_key, ch.acquirer, ch.acquirer_reference)

    def _call_charge_operation(
        self,
        op: _ChargeOp,
        account_id: str,
        livemode: bool,
        pi_id: str,
        action: str,
        call: Callable[[AcquirerConnector, str, str], _T],
    ) -> _T | None:
        """Call step: None when the outcome is unknown (left to the reconciler);
        an acquirer that certainly did not act puts the intent back and raises."""
        conn = self.router.get(op.acquirer)
        try:
            result: _T = self._call_with_retry(lambda: call(conn, op.reference, op.key))
        except AcquirerOutcomeUnknown as exc:
            self._mark_attempt(op.attempt_id, "unknown", error=type(exc).__name__, reconcile=True)
            return None
        except AcquirerError as exc:
            self._revert(account_id, livemode, pi_id, "requires_capture", op.attempt_id, exc)
            raise _acquirer_failure(exc, action) from exc
        return result

    def apply_capture(
        self,
        *,
        attempt_id: str,
        amount_captured: int,
        status: str,
        raw: dict[str, Any],
        request_id: str | None,
        idempotency_key: str | None,
    ) -> None:
        with self.db.write() as s:
            att = self._open_attempt(s, attempt_id)
            if att is None:
                return  # already settled (by a live request or the reconciler)
            pi = s.scalar(
                select(PaymentIntent)
                .where(PaymentIntent.id == att.payment_intent_id)
                .with_for_update()
            )
            ch = self.get_charge(s, att.charge_id, for_update=True)
            assert pi is not None and ch is not None
            att.status, att.response, att.updated, att.reconcile_after = (
                status,
                raw,
                self._now(),
                None,
            )
            ev: dict[str, Any] = {"request_id": request_id, "idempotency_key": idempotency_key}
            pi.version += 1
            if status != "captured":
                pi.status = "requires_capture"
                return
            ch.captured = True
            ch.amount_captured = amount_captured
            pi.status = "succeeded"
            pi.amount_received = amount_captured
            pi.amount_capturable = 0
            self._event(s, pi, "charge.captured", render_charge(ch), **ev)
            self._event(s, pi, "payment_intent.succeeded", render_intent(pi), **ev)

    def _revert(
        self,
        account_id: str,
        livemode: bool,
        pi_id: str,
        status: str,
        attempt_id: str,
        exc: AcquirerError,
    ) -> None:
        """Close a failed attempt and put the intent back, in one transaction."""
        with self.db.write() as s:
            self._mark_attempt(attempt_id, "failed", error=type(exc).__name__, session=s)
            pi = self.get_intent(
                s, account_id=account_id, livemode=livemode, pi_id=pi_id, for_update=True
            )
            pi.status = status
            pi.version += 1

    def _render(self, account_id: str, livemode: bool, pi_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            return render_intent(
                self.get_intent(s, account_id=account_id, livemode=livemode, pi_id=pi_id)
            )

    # ------------------------------------------------------------------- cancel
    def cancel(
        self,
        *,
        account_id: str,
        livemode: bool,
        pi_id: str,
        reason: str | None,
        request_id: str | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        ev: dict[str, Any] = {"request_id": request_id, "idempotency_key": idempotency_key}
        with self.db.write() as s:
            pi = self.get_intent(
                s, account_id=account_id, livemode=livemode, pi_id=pi_id, for_update=True
            )
            if pi.status not in CANCELABLE:
                raise unexpected_state(pi, "cancel", CANCELABLE)
            pi.cancellation_reason = reason
            held = reviews.open_review_for(s, pi.id)
            if held is not None:
                reviews.close(held, reason="canceled", now=self._now(), actor="merchant")
                self._event(s, pi, "review.closed", render_review(held), **ev)
            if pi.status != "requires_capture":
                self._mark_canceled(s, pi, None, ev)
                return render_intent(pi)
            op = self._record_charge_operation(s, pi, "void", None)
        res = self._call_charge_operation(
            op,
            account_id,
            livemode,
            pi_id,
            "cancel",
            lambda conn, ref, key: conn.void(ref, idempotency_key=key),
        )
        if res is None:  # unknown outcome: the reconciler settles it
            return self._render(account_id, livemode, pi_id)
        self.apply_void(attempt_id=op.attempt_id, **ev)
        return self._render(account_id, livemode, pi_id)

    def apply_void(
        self, *, attempt_id: str, request_id: str | None, idempotency_key: str | None
    ) -> None:
        with self.db.write() as s:
            att = self._open_attempt(s, attempt_id)
            if att is None:
                return  # already settled (by a live request or the reconciler)
            att.status, att.updated, att.reconcile_after = "voided", self._now(), None
            pi = s.scalar(
                select(PaymentIntent)
                .where(PaymentIntent.id == att.payment_intent_id)
                .with_for_update()
            )
            ch = self.get_charge(s, att.charge_id, for_update=True)
            assert pi is not None
            self._mark_canceled(
                s, pi, ch, {"request_id": request_id, "idempotency_key": idempotency_key}
            )

    def _mark_canceled(
        self, s: Session, pi: PaymentIntent, ch: Charge | None, ev: dict[str, Any]
    ) -> None:
        pi.status = "canceled"
        pi.canceled_at = self._now()
        pi.amount_capturable = 0
        pi.next_action = None
        pi.version += 1
        if ch is not None:
            # Stripe refunds the uncaptured charge in full when its intent is canceled.
            ch.amount_refunded = ch.amount
            self._event(s, pi, "charge.refunded", render_charge(ch), **ev)
        self._event(s, pi, "payment_intent.canceled", render_intent(pi), **ev)

    # ------------------------------------------------------------------- refund
    def refund(
        self,
        *,
        account_id: str,
        livemode: bool,
        charge_id: str | None,
        pi_id: str | None,
        amount: int | None,
        reason: str | None,
        metadata: dict[str, str],
        request_id: str | None,
        idempotency_key: str | None,
        remember: Callable[[Session, str], None] | None = None,
    ) -> dict[str, Any]:
        now = self._now()
        with self.db.write() as s:
            if pi_id:
                pi = self.get_intent(
                    s, account_id=account_id, livemode=livemode, pi_id=pi_id, for_update=True
                )
                charge_id_resolved = pi.latest_charge_id
                if pi.status != "succeeded" or charge_id_resolved is None:
                    raise InvalidRequestError(
                        f"This PaymentIntent ({pi.id}) has no successful charge to refund.",
                        code="charge_not_refundable" if pi.status != "succeeded" else None,
                        param="payment_intent",
                    )
            else:
                assert charge_id is not None
                charge_id_resolved = charge_id
            ch = self.get_charge(s, charge_id_resolved, for_update=True)
            if ch is None or ch.account_id != account_id or ch.livemode != livemode:
                raise ResourceMissingError("charge", charge_id_resolved, param="charge")
            pi = self.get_intent(
                s, account_id=account_id, livemode=livemode, pi_id=ch.payment_intent_id
            )
            if not ch.captured or ch.status != "succeeded":
                raise InvalidRequestError(
                    f"Charge {ch.id} has not been captured and cannot be refunded; cancel its "
                    "PaymentIntent instead.",
                    code="charge_not_refundable",
                    param="charge",
                )
            remaining = ch.amount_captured - ch.amount_refunded
            if remaining <= 0:
                raise InvalidRequestError(
                    f"Charge {ch.id} has already been refunded.",
                    code="charge_already_refunded",
                )
            amount = remaining if amount is None else amount
            if amount > remaining:
                raise InvalidRequestError(
                    f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                    f"({remaining})",
                    code="amount_too_large",
                    param="amount",
                )
            ch.amount_refunded += amount  # reserved now, released if the refund fails
            rf = Refund(
                id=new_id("re", 24),
                account_id=account_id,
                livemode=livemode,
                created=now,
                charge_id=ch.id,
                payment_intent_id=ch.payment_intent_id,
                amount=amount,
                currency=ch.currency,
                status="pending",
                reason=reason,
                failure_reason=None,
                metadata_=metadata,
                acquirer_reference=None,
            )
            s.add(rf)
            if remember is not None:
                remember(s, rf.id)
            if reason == "fraudulent":
                self._label(s, pi, ch, label="fraudulent", source="refund", actor="merchant")
            assert ch.acquirer is not None and ch.acquirer_reference is not None
            att = self._new_attempt(
                pi=pi,
                operation="refund",
                acquirer=ch.acquirer,
                amount=amount,
                request={"reference": ch.acquirer_reference, "amount": amount},
                charge_id=ch.id,
                refund_id=rf.id,
            )
            s.add(att)
            self._event(
                s,
                pi,
                "refund.created",
                render_refund(rf),
                request_id=request_id,
                idempotency_key=idempotency_key,
            )
            attempt_id, key, acquirer, reference, refund_id = (
                att.id,
                att.idempotency_key,
                ch.acquirer,
                ch.acquirer_reference,
                rf.id,
            )
        conn = self.router.get(acquirer)
        try:
            res = self._call_with_retry(lambda: conn.refund(reference, amount, idempotency_key=key))
        except (AcquirerUnavailable, AcquirerOutcomeUnknown) as exc:
            # Refunds are asynchronous in Stripe too: it stays pending and the
            # reconciler completes it with the same idempotency key.
            self._mark_attempt(attempt_id, "unknown", error=type(exc).__name__, reconcile=True)
            return self._render_refund(refund_id)
        except AcquirerError as exc:
            # Refused outright: the refund fails and its reserved amount is released.
            self.apply_refund(
                attempt_id=attempt_id,
                status="failed",
                reference=None,
                failure_reason="unknown",
                raw={"error": type(exc).__name__},
                request_id=request_id,
                idempotency_key=idempotency_key,
            )
            return self._render_refund(refund_id)
        self.apply_refund(
            attempt_id=attempt_id,
            status=res.status,
            reference=res.reference,
            failure_reason=res.failure_reason,
            raw=res.raw,
            request_id=request_id,
            idempotency_key=idempotency_key,
        )
        return self._render_refund(refund_id)

    def apply_refund(
        self,
        *,
        attempt_id: str,
        status: str,
        reference: str | None,
        failure_reason: str | None,
        raw: dict[str, Any],
        request_id: str | None,
        idempotency_key: str | None,
    ) -> None:
        with self.db.write() as s:
            att = self._open_attempt(s, attempt_id)
            if att is None:
                return  # already settled (by a live request or the reconciler)
            rf = s.scalar(select(Refund).where(Refund.id == att.refund_id).with_for_update())
            ch = self.get_charge(s, att.charge_id, for_update=True)
            pi = s.scalar(select(PaymentIntent).where(PaymentIntent.id == att.payment_intent_id))
            assert rf is not None and ch is not None and pi is not None
            att.status, att.response, att.updated, att.reconcile_after = (
                status,
                raw,
                self._now(),
                None,
            )
            ev: dict[str, Any] = {"request_id": request_id, "idempotency_key": idempotency_key}
            rf.acquirer_reference = reference
            if status == "succeeded":
                rf.status = "succeeded"
                self._event(s, pi, "charge.refunded", render_charge(ch), **ev)
                self._event(s, pi, "refund.updated", render_refund(rf), **ev)
            else:
                rf.status = "failed"
                rf.failure_reason = failure_reason or "unknown"
                ch.amount_refunded -= rf.amount
                self._event(s, pi, "refund.failed", render_refund(rf), **ev)
            self._event(s, pi, "charge.refund.updated", render_refund(rf), **ev)

    def _render_refund(self, refund_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            rf = s.scalar(select(Refund).where(Refund.id == refund_id))
            assert rf is not None
            return render_refund(rf)


def _acquirer_failure(exc: AcquirerError, action: str) -> StripeError:
    if isinstance(exc, AcquirerUnavailable):
        return AcquirerUnavailableError(
            f"The acquirer could not be reached, so the {action} did not happen and the payment "
            "is still authorized. Try again.",
            code="acquirer_unavailable",
        )
    return AcquirerUnavailableError(
        f"The acquirer refused the {action}; the payment is still authorized.",
        code="acquirer_rejected",
    )


def check_client_secret(pi: PaymentIntent, client_secret: str) -> None:
    if not hmac.compare_digest(pi.client_secret.encode(), client_secret.encode()):
        # Same message as a missing object: a wrong secret reveals nothing.
        raise ResourceMissingError("payment_intent", pi.id)


def _check_pm_customer(pm: PaymentMethod, pi: PaymentIntent) -> None:
    if pm.customer_id is not None and pm.customer_id != pi.customer_id:
        raise InvalidRequestError(
            f"The provided PaymentMethod {pm.id} is attached to another customer; it cannot be "
            "used with this PaymentIntent.",
            param="payment_method",
        )


def _outcome(
    type_: str,
    network_status: str,
    reason: str | None,
    result: AuthorizationResult,
    seller_message: str,
    risk: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return risk_outcome(
        {
            "network_status": network_status,
            "reason": reason,
            # The network's own view (Stripe's risk-level test cards); the fraud
            # engine's is merged in below, the more severe winning.
            "risk_level": str(result.raw.get("risk_level") or "normal"),
            "seller_message": seller_message,
            "type": type_,
        },
        risk,
    )


_LEVELS = ("normal", "elevated", "highest")


def _review_reason(risk: dict[str, Any] | None) -> str:
    """Stripe's ``outcome.reason`` for a payment placed in review: the default
    review rule's is ``elevated_risk_level``, any other rule's ``rule``."""
    default = (risk or {}).get("rule") == "rule_default_elevated_risk"  # engine.DEFAULT_RULES
    return "elevated_risk_level" if default else "rule"


def review_risk(risk: dict[str, Any] | None) -> dict[str, Any] | None:
    """The assessment that holds a payment for review, or None: a review
    decision, or a review rule that applies once 3-D Secure has succeeded (then
    the review rule, not the 3-D Secure one, is the charge's ``outcome.rule``)."""
    if not risk:
        return None
    if risk.get("action") == "review":
        return risk
    after = risk.get("review_after_3ds")
    if risk.get("action") == "request_3ds" and isinstance(after, dict):
        return {**risk, "action": "review", **after}
    return None


def risk_outcome(base: dict[str, Any], risk: dict[str, Any] | None) -> dict[str, Any]:
    """A charge's ``outcome`` in Stripe's shape, with the fraud engine's
    assessment: score, level, the deciding rule and (Paywarden's extension)
    the reasons behind the score and the shadow rules that matched."""
    out: dict[str, Any] = {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "reason": None,
        "risk_score": None,
        "rule": None,
        **base,
    }
    if not risk:
        return out
    if risk.get("risk_score") is not None:
        out["risk_score"] = risk["risk_score"]
    level = risk.get("risk_level")
    if level in _LEVELS and (
        out.get("risk_level") not in _LEVELS
        or _LEVELS.index(level) > _LEVELS.index(out["risk_level"])
    ):
        out["risk_level"] = level
    elif out.get("risk_level") not in _LEVELS:
        out["risk_level"] = "not_assessed"
    if risk.get("rule"):
        out["rule"] = risk["rule"]
    out["paywarden_risk"] = {
        "action": risk.get("action"),
        "reasons": list(risk.get("reasons") or []),
        "rule_predicate": risk.get("rule_predicate"),
        "shadow_rules": list(risk.get("shadow_rules") or []),
    }
    return out


def _auth_request_json(req: AuthorizationRequest) -> dict[str, Any]:
    return {
        "amount": req.amount,
        "currency": req.currency,
        "capture": req.capture,
        "card": {
            "test_ref": req.card.test_ref,
            "vault_token": req.card.vault_token,
            "vault_account": req.card.vault_account,
            "exp_month": req.card.exp_month,
            "exp_year": req.card.exp_year,
        },
        "merchant_reference": req.merchant_reference,
        "description": req.description,
        "authentication_id": req.authentication_id,
        "return_url": req.return_url,
        "request_three_d_secure": req.request_three_d_secure,
    }


def auth_request_from_json(d: dict[str, Any]) -> AuthorizationRequest:
    card = d.get("card") or {}
    return AuthorizationRequest(
        amount=int(d["amount"]),
        currency=str(d["currency"]),
        capture=bool(d["capture"]),
        card=CardRef(
            test_ref=card.get("test_ref"),
            vault_token=card.get("vault_token"),
            vault_account=card.get("vault_account"),
            exp_month=card.get("exp_month"),
            exp_year=card.get("exp_year"),
        ),
        merchant_reference=str(d["merchant_reference"]),
        description=d.get("description"),
        authentication_id=d.get("authentication_id"),
        return_url=d.get("return_url"),
        request_three_d_secure=bool(d.get("request_three_d_secure", False)),
    )


def _auth_result_json(r: AuthorizationResult) -> dict[str, Any]:
    return {
        "reference": r.reference,
        "status": r.status,
        "amount": r.amount,
        "amount_captured": r.amount_captured,
        "currency": r.currency,
        "decline_code": r.decline_code,
        "network_status": r.network_status,
        "authentication_id": r.authentication_id,
        "authentication_url": r.authentication_url,
    }
