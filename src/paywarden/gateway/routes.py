"""The Stripe-compatible /v1 surface: parameter specs and thin handlers.

Handlers validate nothing themselves (the spec did), own no business rules
(the domain services do) and run inside the worker thread pool.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from paywarden.core.errors import (
    ApiError,
    CardError,
    InvalidRequestError,
    ParameterError,
    ResourceMissingError,
    ServiceUnavailableError,
    StripeError,
)
from paywarden.core.ids import new_id, random_base62
from paywarden.customers import service as customers
from paywarden.customers.models import Customer
from paywarden.events.models import Event
from paywarden.events.service import new_event, render_event
from paywarden.http.api import Call, Endpoint
from paywarden.http.params import EXPAND, PAGINATION, Param, merge_metadata
from paywarden.listing import get_owned, list_response
from paywarden.payments import methods
from paywarden.payments.flows import UPDATABLE, Payments, check_client_secret, unexpected_state
from paywarden.payments.models import CardToken, Charge, PaymentIntent, PaymentMethod, Refund
from paywarden.payments.render import render_charge, render_intent, render_refund
from paywarden.payments.test_methods import lookup_test_payment_method
from paywarden.vault.client import (
    CardMetadata,
    VaultCardError,
    VaultClient,
    VaultFailure,
    VaultUnavailable,
)

if TYPE_CHECKING:
    from paywarden.gateway.container import Gateway

# ----------------------------------------------------------------- param specs
ADDRESS = Param(
    "dict",
    fields={
        k: Param("str", max_length=200)
        for k in ("city", "country", "line1", "line2", "postal_code", "state")
    },
)
CUSTOMER_FIELDS: dict[str, Param] = {
    "email": Param("email", nullable=True),
    "name": Param("str", max_length=256, nullable=True),
    "phone": Param("str", max_length=32, nullable=True),
    "description": Param("str", max_length=350, nullable=True),
    "address": ADDRESS,
    "metadata": Param("metadata"),
    **EXPAND,
}
BILLING = Param(
    "dict",
    fields={
        "address": ADDRESS,
        "email": Param("email", nullable=True),
        "name": Param("str", max_length=256, nullable=True),
        "phone": Param("str", max_length=32, nullable=True),
    },
)
PM_CREATE: dict[str, Param] = {
    "type": Param("enum", required=True, choices=("card",)),
    "card": Param("dict", fields={"token": Param("str", max_length=64)}),
    "billing_details": BILLING,
    "metadata": Param("metadata"),
    **EXPAND,
}
# Stripe's card token fields besides the card data itself (which the vault takes).
TOKEN_CARD_FIELDS = (
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)
TOKEN_CREATE: dict[str, Param] = {
    "card": Param(
        "dict",
        fields={
            **{f: Param("str", max_length=200) for f in TOKEN_CARD_FIELDS},
            "currency": Param("currency"),
        },
    ),
    **EXPAND,
}
PM_UPDATE: dict[str, Param] = {
    "billing_details": BILLING,
    "card": Param(
        "dict",
        fields={
            "exp_month": Param("int", min=1, max=12),
            "exp_year": Param("int", min=2000, max=2100),
        },
    ),
    "metadata": Param("metadata"),
    **EXPAND,
}
CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
PI_COMMON: dict[str, Param] = {
    "customer": Param("id", nullable=True),
    "payment_method": Param("id", nullable=True),
    "description": Param("str", max_length=1000, nullable=True),
    "receipt_email": Param("email", nullable=True),
    "statement_descriptor": Param("str", max_length=22, nullable=True),
    "capture_method": Param("enum", choices=CAPTURE_METHODS),
    "setup_future_usage": Param("enum", choices=("on_session", "off_session"), nullable=True),
    "metadata": Param("metadata"),
    "payment_method_types": Param("list", item=Param("enum", choices=("card",)), max_items=1),
    **EXPAND,
}
# Paywarden's extension on confirm: the customer's request context, which only
# the merchant's backend knows (a browser confirming with a publishable key is
# the customer, so its own IP, User-Agent and Accept-Language are used instead).
RISK_CONTEXT = Param(
    "dict",
    fields={
        "ip_address": Param("str", max_length=64),
        "user_agent": Param("str", max_length=512),
        "accept_language": Param("str", max_length=256),
        "email": Param("email"),
        "device_token": Param("str", max_length=200),
    },
)
PI_CONFIRM_EXTRA: dict[str, Param] = {
    "paywarden_risk_context": RISK_CONTEXT,
    # Stripe's field for a Radar session; here it carries a Paywarden device token.
    "radar_options": Param("dict", fields={"session": Param("str", max_length=200)}),
    "return_url": Param("str", max_length=2048),
    "off_session": Param("bool"),
    "error_on_requires_action": Param("bool"),
    "use_stripe_sdk": Param("bool"),
}
PI_CREATE: dict[str, Param] = {
    "amount": Param("amount", required=True),
    "currency": Param("currency", required=True),
    "confirm": Param("bool"),
    "confirmation_method": Param("enum", choices=("automatic", "manual")),
    "automatic_payment_methods": Param(
        "dict",
        fields={
            "enabled": Param("bool", required=True),
            "allow_redirects": Param("enum", choices=("always", "never")),
        },
    ),
    **PI_COMMON,
    **PI_CONFIRM_EXTRA,
}
PI_UPDATE: dict[str, Param] = {
    "amount": Param("amount"),
    "currency": Param("currency"),
    **PI_COMMON,
}
PI_CONFIRM: dict[str, Param] = {
    "payment_method": Param("id"),
    "receipt_email": Param("email"),
    "capture_method": Param("enum", choices=CAPTURE_METHODS),
    "setup_future_usage": Param("enum", choices=("on_session", "off_session"), nullable=True),
    "client_secret": Param("str", max_length=128),
    **PI_CONFIRM_EXTRA,
    **EXPAND,
}
PI_CAPTURE: dict[str, Param] = {
    "amount_to_capture": Param("amount"),
    "metadata": Param("metadata"),
    "statement_descriptor": Param("str", max_length=22),
    **EXPAND,
}
PI_CANCEL: dict[str, Param] = {
    "cancellation_reason": Param(
        "enum", choices=("duplicate", "fraudulent", "requested_by_customer", "abandoned")
    ),
    **EXPAND,
}
PI_RETRIEVE: dict[str, Param] = {"client_secret": Param("str", max_length=128), **EXPAND}
REFUND_CREATE: dict[str, Param] = {
    "charge": Param("id"),
    "payment_intent": Param("id"),
    "amount": Param("amount"),
    "reason": Param("enum", choices=("duplicate", "fraudulent", "requested_by_customer")),
    "metadata": Param("metadata"),
    **EXPAND,
}


def _now(gw: Gateway) -> int:
    return int(gw.clock.now())


def _expand(values: dict[str, Any]) -> set[str]:
    return set(values.get("expand") or [])


def _emit(
    gw: Gateway,
    s: Session,
    call: Call,
    owner: Any,
    type_: str,
    body: dict[str, Any],
    previous: dict[str, Any] | None = None,
) -> None:
    """Record an event for ``owner``'s tenant and mode, in the caller's transaction."""
    s.add(
        new_event(
            account_id=owner.account_id,
            livemode=owner.livemode,
            type=type_,
            obj=body,
            now=_now(gw),
            previous_attributes=previous,
            request_id=call.request_id,
            idempotency_key=call.idempotency_key,
        )
    )


# -------------------------------------------------------------------- customers
def customer_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.recovered_id:  # an earlier holder of this idempotency key created it
        return customer_retrieve(gw, call, {}, call.recovered_id)
    with gw.db.write() as s:
        c = customers.create(
            s, account_id=call.account_id, livemode=call.livemode, now=_now(gw), values=v
        )
        call.remember(s, c.id)
        body = customers.render(c)
        _emit(gw, s, call, c, "customer.created", body)
        return body


def customer_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        c = customers.get(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            customer_id=id,
            include_deleted=True,
        )
        return customers.render(c)


def customer_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        c = customers.get(
            s, account_id=call.account_id, livemode=call.livemode, customer_id=id, for_update=True
        )
        previous = customers.update_fields(c, v)
        body = customers.render(c)
        if previous:
            _emit(gw, s, call, c, "customer.updated", body, previous=previous)
        return body


def customer_delete(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        c = customers.get(
            s, account_id=call.account_id, livemode=call.livemode, customer_id=id, for_update=True
        )
        snapshot = customers.render(c)
        # Erasing a customer crypto-shreds every card of theirs in the vault.
        for pm in s.scalars(
            select(PaymentMethod).where(
                PaymentMethod.customer_id == c.id, PaymentMethod.account_id == c.account_id
            )
        ):
            _shred(gw, pm, "customer_deleted")
        customers.delete(s, c)
        _emit(gw, s, call, c, "customer.deleted", snapshot)
        return customers.render(c)


# -------------------------------------------------------------- card vault
def _vault(gw: Gateway) -> VaultClient:
    if gw.vault is None:
        raise InvalidRequestError(
            "This gateway has no card vault configured.", code="vault_not_configured"
        )
    return gw.vault


def _vault_errors(exc: VaultFailure) -> StripeError:
    """A vault failure as the merchant should see it (never with card data)."""
    if isinstance(exc, VaultCardError):
        return CardError(str(exc), code=exc.code, param=exc.param)
    if isinstance(exc, VaultUnavailable):
        return ServiceUnavailableError(
            "The card vault is unavailable; nothing was stored. Try again shortly.",
            code="vault_unavailable",
        )
    if exc.code in ("encrypted_card_invalid", "encrypted_card_reused"):
        return InvalidRequestError(str(exc), code=exc.code, param="card[encrypted]")
    if exc.status >= 500:
        # Never stored for idempotent replay: a retry works once the vault is back.
        return ServiceUnavailableError(
            "The card vault could not process the request; nothing was stored. Try again.",
            code="vault_unavailable",
        )
    if exc.code == "resource_missing":
        return InvalidRequestError(
            "The card is no longer available in the vault.", code="card_unavailable"
        )
    return ApiError("The card vault could not process the request.", code="vault_error")


def _tokenize(gw: Gateway, call: Call) -> CardMetadata:
    assert call.card is not None
    try:
        return _vault(gw).tokenize(
            account_id=call.account_id, card=call.card, request_id=call.request_id
        )
    except VaultFailure as exc:
        raise _vault_errors(exc) from None


def _shred(gw: Gateway, pm: PaymentMethod, reason: str) -> None:
    """Crypto-shred a vaulted card: its data key is destroyed in the vault.
    Called inside the caller's transaction, so a failure changes nothing."""
    token = methods.vault_token(pm)
    if token is None:
        return
    try:
        _vault(gw).delete(token=token, account_id=pm.account_id, reason=reason)
    except VaultFailure as exc:
        if exc.code != "resource_missing":
            raise _vault_errors(exc) from None


def encryption_keys(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """The vault's HPKE public keys (current first), for client-side encryption."""
    try:
        keys = _vault(gw).encryption_keys()
    except VaultFailure as exc:
        raise _vault_errors(exc) from None
    # The caller's account goes into every payload sealed to these keys, so the
    # vault can refuse a payload made for another merchant.
    return {
        "object": "list",
        "data": [{**k, "account": call.account_id} for k in keys],
        "has_more": False,
        "url": "/v1/paywarden/encryption_keys",
    }


def token_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if call.card is None:
        raise InvalidRequestError(
            "Provide card data: card[number], card[exp_month], card[exp_year] and card[cvc], "
            "or card[encrypted].",
            param="card",
            code="parameter_missing",
        )
    if call.recovered_id:
        return token_retrieve(gw, call, {}, call.recovered_id)
    meta = _tokenize(gw, call)
    with gw.db.write() as s:
        tok = CardToken(
            id=new_id("tok", 24),
            account_id=call.account_id,
            livemode=call.livemode,
            created=_now(gw),
            client_ip=call.source_ip,
            **methods.card_columns(meta),
            card_ref=f"vault:{meta.token}",
            holder={k: val for k, val in (v.get("card") or {}).items() if val is not None},
        )
        s.add(tok)
        s.flush()
        call.remember(s, tok.id)
        return methods.render_token(tok)


def token_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        tok = get_owned(
            s, CardToken, id, account_id=call.account_id, livemode=call.livemode, kind="token"
        )
        return methods.render_token(tok)


# -------------------------------------------------------------- payment methods
def pm_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    token: str = (v.get("card") or {}).get("token") or ""
    if call.card is None and not token:
        raise InvalidRequestError(
            "Provide card data (card[number], card[exp_month], card[exp_year], card[cvc]), "
            "card[encrypted], or card[token] with a token such as 'tok_visa'.",
            param="card[token]",
            code="parameter_missing",
        )
    if call.card is not None and token:
        raise InvalidRequestError(
            "Send either card data or card[token], not both.", param="card[token]"
        )
    if call.recovered_id:
        return pm_retrieve(gw, call, {}, call.recovered_id)
    meta = _tokenize(gw, call) if call.card is not None else None
    billing, metadata = v.get("billing_details"), merge_metadata({}, v.get("metadata"))
    with gw.db.write() as s:
        if meta is not None:
            pm = methods.from_vault(
                s,
                meta=meta,
                account_id=call.account_id,
                livemode=call.livemode,
                now=_now(gw),
                billing_details=billing,
                metadata=metadata,
            )
        elif token.startswith("tok_") and lookup_test_payment_method(token) is None:
            pm = methods.from_card_token(
                s,
                token_id=token,
                account_id=call.account_id,
                livemode=call.livemode,
                now=_now(gw),
                billing_details=billing,
                metadata=metadata,
            )
        else:
            pm = methods.from_test_id(
                s,
                pm_id=token,
                account_id=call.account_id,
                livemode=call.livemode,
                now=_now(gw),
                pepper=gw.secrets.api_key_pepper,
                billing_details=billing,
                metadata=metadata,
                param="card[token]",
            )
        call.remember(s, pm.id)
        return methods.render(pm)


def pm_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        return methods.render(
            methods.get(s, account_id=call.account_id, livemode=call.livemode, pm_id=id)
        )


def pm_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        pm = methods.get(
            s, account_id=call.account_id, livemode=call.livemode, pm_id=id, for_update=True
        )
        if pm.customer_id is None:
            raise InvalidRequestError(
                "You must save this PaymentMethod to a customer before you can update it.",
                param="id",
            )
        previous = methods.update_fields(pm, v)
        body = methods.render(pm)
        if previous:
            _emit(gw, s, call, pm, "payment_method.updated", body, previous=previous)
        return body


def pm_attach(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    now = _now(gw)
    with gw.db.write() as s:
        cust = customers.get(
            s, account_id=call.account_id, livemode=call.livemode, customer_id=v["customer"]
        )
        pm = methods.resolve(
            s,
            account_id=call.account_id,
            livemode=call.livemode,
            pm_id=id,
            now=now,
            pepper=gw.secrets.api_key_pepper,
            param="id",
        )
        if pm.customer_id is not None and pm.customer_id != cust.id:
            raise InvalidRequestError(
                "The payment method you provided has already been attached to a customer.",
                code="payment_method_unexpected_state",
                param="customer",
            )
        if pm.customer_id is None:
            pm.customer_id = cust.id
            _emit(gw, s, call, pm, "payment_method.attached", methods.render(pm))
        return methods.render(pm)


def pm_detach(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        pm = methods.get(
            s, account_id=call.account_id, livemode=call.livemode, pm_id=id, for_update=True
        )
        if pm.customer_id is None:
            raise InvalidRequestError(
                "The payment method you provided is not attached to a customer so detachment is "
                "impossible.",
                code="payment_method_unexpected_state",
                param="payment_method",
            )
        previous = {"customer": pm.customer_id}
        pm.customer_id = None
        # Stripe: a detached payment method can never be used again. Its card
        # is crypto-shredded in the vault, in this transaction.
        _shred(gw, pm, "detached")
        body = methods.render(pm)
        _emit(gw, s, call, pm, "payment_method.detached", body, previous=previous)
        return body


def pm_list(
    gw: Gateway, call: Call, v: dict[str, Any], customer_id: str | None = None
) -> dict[str, Any]:
    cust = customer_id or v.get("customer")
    with gw.db.read() as s:
        filters = []
        if cust:
            customers.get(
                s,
                account_id=call.account_id,
                livemode=call.livemode,
                customer_id=cust,
            )
            filters.append(PaymentMethod.customer_id == cust)
        elif customer_id is None:
            raise InvalidRequestError(
                "Listing payment methods requires a customer.",
                param="customer",
                code="parameter_missing",
            )
        url = f"/v1/customers/{cust}/payment_methods" if customer_id else "/v1/payment_methods"
        return list_response(
            s,
            PaymentMethod,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="payment_method",
            url=url,
            render=methods.render,
            filters=filters,
        )


def customer_pm_list(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    return pm_list(gw, call, v, customer_id=id)


# --------------------------------------------------------------- payment intents
# Decline reasons the customer must not learn (they tell a fraudster what the
# issuer knows); a browser-side caller sees a generic decline, the merchant the truth.
_SENSITIVE_DECLINES = frozenset(
    {
        "lost_card",
        "stolen_card",
        "fraudulent",
        "pickup_card",
        "restricted_card",
        "merchant_blacklist",
        "security_violation",
    }
)


def _mask_error(err: dict[str, Any]) -> dict[str, Any]:
    if err.get("decline_code") in _SENSITIVE_DECLINES:
        err = {**err, "decline_code": "generic_decline", "message": "Your card was declined."}
    return err


def _for_browser(body: dict[str, Any]) -> dict[str, Any]:
    if body.get("last_payment_error"):
        body = {**body, "last_payment_error": _mask_error(body["last_payment_error"])}
    return body


def _render_pi(
    gw: Gateway, call: Call, body: dict[str, Any], values: dict[str, Any]
) -> dict[str, Any]:
    if call.auth.kind == "publishable":
        return _for_browser(body)  # never expanded: charges carry the seller's details
    if "latest_charge" in _expand(values) and isinstance(body.get("latest_charge"), str):
        with gw.db.read() as s:
            ch = s.scalar(
                select(Charge).where(
                    Charge.id == body["latest_charge"],
                    Charge.account_id == call.account_id,
                    Charge.livemode == call.livemode,
                )
            )
            if ch is not None:
                body["latest_charge"] = render_charge(ch)
    return body


def _automatic_payment_methods(v: dict[str, Any]) -> dict[str, Any] | None:
    apm = v.get("automatic_payment_methods")
    if not apm:
        return None
    # Cards never redirect except for 3-D Secure, which is always allowed.
    return {"allow_redirects": apm.get("allow_redirects") or "always", "enabled": apm["enabled"]}


def _create_intent(gw: Gateway, call: Call, v: dict[str, Any]) -> str:
    now = _now(gw)
    with gw.db.write() as s:
        customer_id = v.get("customer")
        if customer_id:
            customers.get(
                s, account_id=call.account_id, livemode=call.livemode, customer_id=customer_id
            )  # raises if missing
        pm_id = None
        if v.get("payment_method"):
            pm = methods.resolve(
                s,
                account_id=call.account_id,
                livemode=call.livemode,
                pm_id=v["payment_method"],
                now=now,
                pepper=gw.secrets.api_key_pepper,
            )
            if pm.customer_id is not None and pm.customer_id != customer_id:
                raise InvalidRequestError(
                    f"The provided PaymentMethod {pm.id} is attached to another customer.",
                    param="payment_method",
                )
            pm_id = pm.id

        pi_id = new_id("pi", 24)
        pi = PaymentIntent(
            id=pi_id,
            account_id=call.account_id,
            livemode=call.livemode,
            created=now,
            amount=v["amount"],
            currency=v["currency"],
            status="requires_confirmation" if pm_id else "requires_payment_method",
            capture_method=v.get("capture_method") or "automatic_async",
            confirmation_method=v.get("confirmation_method") or "automatic",
            customer_id=customer_id,
            payment_method_id=pm_id,
            description=v.get("description"),
            receipt_email=v.get("receipt_email"),
            statement_descriptor=v.get("statement_descriptor"),
            metadata_=merge_metadata({}, v.get("metadata")),
            client_secret=f"{pi_id}_secret_{random_base62(25)}",
            amount_capturable=0,
            amount_received=0,
            canceled_at=None,
            cancellation_reason=None,
            latest_charge_id=None,
            last_payment_error=None,
            next_action=None,
            return_url=v.get("return_url"),
            setup_future_usage=v.get("setup_future_usage"),
            automatic_payment_methods=_automatic_payment_methods(v),
            version=0,
        )
        s.add(pi)
        s.flush()
        call.remember(s, pi_id)
        _emit(gw, s, call, pi, "payment_intent.created", render_intent(pi))
    return pi_id


def pi_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if v.get("return_url") and not v.get("confirm"):
        raise ParameterError("return_url can only be set when confirm=true.", param="return_url")
    if v.get("confirm") and not v.get("payment_method"):
        raise ParameterError(
            "You cannot confirm this PaymentIntent because it's missing a payment method. "
            "Pass payment_method with confirm=true.",
            param="payment_method",
            code="payment_intent_unexpected_state",
        )
    ctx = risk_context(call, v)  # validated before anything is written
    # A takeover of a crashed request resumes the intent it had created: the
    # state machine makes re-confirming it safe, and nothing is created twice.
    pi_id = call.recovered_id or _create_intent(gw, call, v)
    resumable = not call.recovered_id or _status(gw, call, pi_id) == "requires_confirmation"
    if v.get("confirm") and resumable:
        confirm_values: dict[str, Any] = {
            k: v[k] for k in ("return_url", "error_on_requires_action") if k in v
        }
        body = gw.payments.confirm(
            account_id=call.account_id,
            livemode=call.livemode,
            pi_id=pi_id,
            values=confirm_values,
            pepper=gw.secrets.api_key_pepper,
            request_id=call.request_id,
            idempotency_key=call.idempotency_key,
            risk_context=ctx,
        )
        return _render_pi(gw, call, body, v)
    with gw.db.read() as s:
        return _render_pi(
            gw,
            call,
            render_intent(
                Payments.get_intent(
                    s, account_id=call.account_id, livemode=call.livemode, pi_id=pi_id
                )
            ),
            v,
        )


def risk_context(call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """The signals the fraud engine gets for this confirm (see RISK_CONTEXT)."""
    ctx: dict[str, Any] = dict(v.get("paywarden_risk_context") or {})
    ip = ctx.get("ip_address")
    if ip is not None:
        try:
            if "%" in ip:  # an IPv6 zone ("fe80::1%eth0") would make every suffix a new IP
                raise ValueError(ip)
            ctx["ip_address"] = str(ipaddress.ip_address(ip.strip()))
        except ValueError:
            raise ParameterError(
                "Invalid paywarden_risk_context[ip_address]: not an IP address.",
                param="paywarden_risk_context[ip_address]",
            ) from None
    session = (v.get("radar_options") or {}).get("session")
    if session and not ctx.get("device_token"):
        ctx["device_token"] = session
    if call.auth.kind == "publishable":
        try:
            source: str | None = str(ipaddress.ip_address(call.source_ip))
        except ValueError:
            source = None
        ctx.update(
            ip_address=source,
            user_agent=call.user_agent,
            accept_language=call.accept_language,
        )
    return ctx


def _status(gw: Gateway, call: Call, pi_id: str) -> str:
    with gw.db.read() as s:
        pi = Payments.get_intent(s, account_id=call.account_id, livemode=call.livemode, pi_id=pi_id)
        return pi.status


def pi_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        pi = Payments.get_intent(s, account_id=call.account_id, livemode=call.livemode, pi_id=id)
        if call.auth.kind == "publishable":
            if not v.get("client_secret"):
                raise InvalidRequestError(
                    "A publishable key must send the PaymentIntent's client_secret.",
                    param="client_secret",
                    code="parameter_missing",
                )
            check_client_secret(pi, v["client_secret"])
        body = render_intent(pi)
    return _render_pi(gw, call, body, v)


def pi_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    now = _now(gw)
    with gw.db.write() as s:
        pi = Payments.get_intent(
            s, account_id=call.account_id, livemode=call.livemode, pi_id=id, for_update=True
        )
        money_fields = {
            "amount",
            "currency",
            "customer",
            "payment_method",
            "capture_method",
            "receipt_email",
            "statement_descriptor",
            "setup_future_usage",
            "payment_method_types",
        }
        if money_fields & v.keys() and pi.status not in UPDATABLE:
            raise unexpected_state(pi, "update", UPDATABLE)
        if pi.status == "canceled" and v.keys() - {"expand"}:
            raise unexpected_state(pi, "update", UPDATABLE)
        if v.get("customer"):
            customers.get(
                s, account_id=call.account_id, livemode=call.livemode, customer_id=v["customer"]
            )
        for f, attr in (
            ("amount", "amount"),
            ("currency", "currency"),
            ("customer", "customer_id"),
            ("description", "description"),
            ("receipt_email", "receipt_email"),
            ("statement_descriptor", "statement_descriptor"),
            ("capture_method", "capture_method"),
            ("setup_future_usage", "setup_future_usage"),
        ):
            if f in v:
                setattr(pi, attr, v[f])
        if "payment_method" in v:
            if v["payment_method"]:
                pm = methods.resolve(
                    s,
                    account_id=call.account_id,
                    livemode=call.livemode,
                    pm_id=v["payment_method"],
                    now=now,
                    pepper=gw.secrets.api_key_pepper,
                )
                if pm.customer_id is not None and pm.customer_id != pi.customer_id:
                    raise InvalidRequestError(
                        f"The provided PaymentMethod {pm.id} is attached to another customer.",
                        param="payment_method",
                    )
                pi.payment_method_id = pm.id
                pi.status = "requires_confirmation"
                pi.next_action = None
            else:
                pi.payment_method_id = None
                pi.status = "requires_payment_method"
        if "metadata" in v:
            pi.metadata_ = merge_metadata(pi.metadata_, v["metadata"])
        pi.version += 1
        # Stripe emits no event for a plain PaymentIntent update.
        return _render_pi(gw, call, render_intent(pi), v)


def pi_confirm(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    client_secret = v.get("client_secret")
    if call.auth.kind == "publishable" and not client_secret:
        raise InvalidRequestError(
            "A publishable key must send the PaymentIntent's client_secret.",
            param="client_secret",
            code="parameter_missing",
        )
    try:
        body = gw.payments.confirm(
            account_id=call.account_id,
            livemode=call.livemode,
            pi_id=id,
            values=v,
            pepper=gw.secrets.api_key_pepper,
            request_id=call.request_id,
            idempotency_key=call.idempotency_key,
            client_secret=client_secret,
            risk_context=risk_context(call, v),
        )
    except CardError as err:
        if call.auth.kind == "publishable":
            masked = _mask_error({"decline_code": err.decline_code, "message": err.message})
            err.decline_code, err.message = masked["decline_code"], masked["message"]
            err.extra = {
                k: (_for_browser(val) if k == "payment_intent" else val)
                for k, val in err.extra.items()
                if k != "charge"
            }
        raise
    return _render_pi(gw, call, body, v)


def pi_capture(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    body = gw.payments.capture(
        account_id=call.account_id,
        livemode=call.livemode,
        pi_id=id,
        amount_to_capture=v.get("amount_to_capture"),
        metadata=v.get("metadata"),
        request_id=call.request_id,
        idempotency_key=call.idempotency_key,
    )
    return _render_pi(gw, call, body, v)


def pi_cancel(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    body = gw.payments.cancel(
        account_id=call.account_id,
        livemode=call.livemode,
        pi_id=id,
        reason=v.get("cancellation_reason"),
        request_id=call.request_id,
        idempotency_key=call.idempotency_key,
    )
    return _render_pi(gw, call, body, v)


# ----------------------------------------------------------------- charges
def charge_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        ch = get_owned(
            s, Charge, id, account_id=call.account_id, livemode=call.livemode, kind="charge"
        )
        return render_charge(ch)


# ----------------------------------------------------------------- refunds
def refund_create(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    if bool(v.get("charge")) == bool(v.get("payment_intent")):
        raise InvalidRequestError(
            "Provide exactly one of charge or payment_intent.",
            param="payment_intent",
            code="parameter_missing" if not v.get("charge") else None,
        )
    if call.recovered_id:  # resume the refund a crashed earlier request created
        return refund_retrieve(gw, call, {}, call.recovered_id)
    return gw.payments.refund(
        account_id=call.account_id,
        livemode=call.livemode,
        charge_id=v.get("charge"),
        pi_id=v.get("payment_intent"),
        amount=v.get("amount"),
        reason=v.get("reason"),
        metadata=merge_metadata({}, v.get("metadata")),
        request_id=call.request_id,
        idempotency_key=call.idempotency_key,
        remember=call.remember,
    )


def _get_refund(s: Any, call: Call, id: str, for_update: bool = False) -> Refund:
    q = select(Refund).where(
        Refund.id == id, Refund.account_id == call.account_id, Refund.livemode == call.livemode
    )
    if for_update:
        q = q.with_for_update()
    rf: Refund | None = s.scalar(q)
    if rf is None:
        raise ResourceMissingError("refund", id)
    return rf


def refund_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        return render_refund(_get_refund(s, call, id))


def refund_update(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.write() as s:
        rf = _get_refund(s, call, id, for_update=True)
        if "metadata" in v:
            rf.metadata_ = merge_metadata(rf.metadata_, v["metadata"])
        return render_refund(rf)


# ------------------------------------------------------------------ events
def event_retrieve(gw: Gateway, call: Call, v: dict[str, Any], id: str) -> dict[str, Any]:
    with gw.db.read() as s:
        ev = s.scalar(
            select(Event).where(
                Event.id == id, Event.account_id == call.account_id, Event.livemode == call.livemode
            )
        )
        if ev is None:
            raise ResourceMissingError("event", id)
        return render_event(ev)


def event_list(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    filters = []
    if v.get("type"):
        t = v["type"]
        filters.append(Event.type.like(t.replace("*", "%")) if "*" in t else Event.type == t)
    if v.get("types"):
        filters.append(Event.type.in_(v["types"]))
    with gw.db.read() as s:
        return list_response(
            s,
            Event,
            account_id=call.account_id,
            livemode=call.livemode,
            params=v,
            kind="event",
            url="/v1/events",
            render=render_event,
            filters=filters,
        )


def lister(
    model: Any,
    *,
    kind: str,
    url: str,
    render: Callable[[Any], dict[str, Any]],
    by: dict[str, Any],
    always: tuple[Any, ...] = (),
) -> Callable[[Gateway, Call, dict[str, Any]], dict[str, Any]]:
    """A Stripe list endpoint: ``by`` maps a filter parameter to its column."""

    def handler(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
        filters = [*always, *(col == v[param] for param, col in by.items() if v.get(param))]
        with gw.db.read() as s:
            return list_response(
                s,
                model,
                account_id=call.account_id,
                livemode=call.livemode,
                params=v,
                kind=kind,
                url=url,
                render=render,
                filters=filters,
            )

    return handler


customer_list = lister(
    Customer,
    kind="customer",
    url="/v1/customers",
    render=customers.render,
    by={"email": Customer.email},
    always=(Customer.deleted.is_(False),),
)
pi_list = lister(
    PaymentIntent,
    kind="payment_intent",
    url="/v1/payment_intents",
    render=render_intent,
    by={"customer": PaymentIntent.customer_id},
)
charge_list = lister(
    Charge,
    kind="charge",
    url="/v1/charges",
    render=render_charge,
    by={"payment_intent": Charge.payment_intent_id, "customer": Charge.customer_id},
)
refund_list = lister(
    Refund,
    kind="refund",
    url="/v1/refunds",
    render=render_refund,
    by={"charge": Refund.charge_id, "payment_intent": Refund.payment_intent_id},
)


def noop(gw: Gateway, call: Call, v: dict[str, Any]) -> dict[str, Any]:
    """Authenticated no-op: the benchmark's baseline for per-request overhead."""
    return {"object": "ping", "livemode": call.livemode}


def endpoints() -> list[Endpoint]:
    cust_list = {**PAGINATION, "email": Param("email")}
    pm_list_spec = {**PAGINATION, "customer": Param("id"), "type": Param("enum", choices=("card",))}
    pi_list_spec = {**PAGINATION, "customer": Param("id")}
    charge_list_spec = {**PAGINATION, "customer": Param("id"), "payment_intent": Param("id")}
    refund_list_spec = {**PAGINATION, "charge": Param("id"), "payment_intent": Param("id")}
    event_list_spec = {
        **PAGINATION,
        "type": Param("str", max_length=100),
        "types": Param("list", item=Param("str", max_length=100), max_items=20),
        "delivery_success": Param("bool"),
    }
    r, w = False, True
    return [
        Endpoint("POST", "/v1/customers", customer_create, CUSTOMER_FIELDS, "customers", w),
        Endpoint("GET", "/v1/customers", customer_list, cust_list, "customers", r),
        Endpoint("GET", "/v1/customers/{id}", customer_retrieve, EXPAND, "customers", r),
        Endpoint("POST", "/v1/customers/{id}", customer_update, CUSTOMER_FIELDS, "customers", w),
        Endpoint("DELETE", "/v1/customers/{id}", customer_delete, {}, "customers", w),
        Endpoint(
            "GET",
            "/v1/customers/{id}/payment_methods",
            customer_pm_list,
            pm_list_spec,
            "payment_methods",
            r,
        ),
        Endpoint(
            "POST",
            "/v1/payment_methods",
            pm_create,
            PM_CREATE,
            "payment_methods",
            w,
            publishable=True,
            card_intake=True,
        ),
        Endpoint(
            "POST",
            "/v1/tokens",
            token_create,
            TOKEN_CREATE,
            "tokens",
            w,
            publishable=True,
            card_intake=True,
        ),
        Endpoint("GET", "/v1/tokens/{id}", token_retrieve, EXPAND, "tokens", r),
        Endpoint(
            "GET",
            "/v1/paywarden/encryption_keys",
            encryption_keys,
            {},
            "payment_methods",
            r,
            publishable=True,
        ),
        Endpoint("GET", "/v1/payment_methods", pm_list, pm_list_spec, "payment_methods", r),
        Endpoint("GET", "/v1/payment_methods/{id}", pm_retrieve, EXPAND, "payment_methods", r),
        Endpoint("POST", "/v1/payment_methods/{id}", pm_update, PM_UPDATE, "payment_methods", w),
        Endpoint(
            "POST",
            "/v1/payment_methods/{id}/attach",
            pm_attach,
            {"customer": Param("id", required=True), **EXPAND},
            "payment_methods",
            w,
        ),
        Endpoint(
            "POST", "/v1/payment_methods/{id}/detach", pm_detach, EXPAND, "payment_methods", w
        ),
        Endpoint("POST", "/v1/payment_intents", pi_create, PI_CREATE, "payment_intents", w),
        Endpoint("GET", "/v1/payment_intents", pi_list, pi_list_spec, "payment_intents", r),
        Endpoint(
            "GET",
            "/v1/payment_intents/{id}",
            pi_retrieve,
            PI_RETRIEVE,
            "payment_intents",
            r,
            publishable=True,
        ),
        Endpoint("POST", "/v1/payment_intents/{id}", pi_update, PI_UPDATE, "payment_intents", w),
        Endpoint(
            "POST",
            "/v1/payment_intents/{id}/confirm",
            pi_confirm,
            PI_CONFIRM,
            "payment_intents",
            w,
            publishable=True,
        ),
        Endpoint(
            "POST", "/v1/payment_intents/{id}/capture", pi_capture, PI_CAPTURE, "payment_intents", w
        ),
        Endpoint(
            "POST", "/v1/payment_intents/{id}/cancel", pi_cancel, PI_CANCEL, "payment_intents", w
        ),
        Endpoint("GET", "/v1/charges", charge_list, charge_list_spec, "charges", r),
        Endpoint("GET", "/v1/charges/{id}", charge_retrieve, EXPAND, "charges", r),
        Endpoint("POST", "/v1/refunds", refund_create, REFUND_CREATE, "refunds", w),
        Endpoint("GET", "/v1/refunds", refund_list, refund_list_spec, "refunds", r),
        Endpoint("GET", "/v1/refunds/{id}", refund_retrieve, EXPAND, "refunds", r),
        Endpoint(
            "POST",
            "/v1/refunds/{id}",
            refund_update,
            {"metadata": Param("metadata"), **EXPAND},
            "refunds",
            w,
        ),
        Endpoint("GET", "/v1/events", event_list, event_list_spec, "events", r),
        Endpoint("GET", "/v1/events/{id}", event_retrieve, EXPAND, "events", r),
        Endpoint("GET", "/v1/paywarden/ping", noop, {}, "events", r, publishable=True),
    ]
