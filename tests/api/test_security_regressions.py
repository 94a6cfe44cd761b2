"""Regression tests for the findings of the first security review."""

from __future__ import annotations

import time

from sqlalchemy import func, select, update

from paywarden.core.secrets import Secret
from paywarden.gateway import routes
from paywarden.gateway.container import Gateway
from paywarden.http.api import Call
from paywarden.idempotency.models import IdempotencyRecord
from paywarden.payments.models import AcquirerAttempt, PaymentIntent, Refund
from paywarden.payments.reconcile import Reconciler
from paywarden.tenancy.service import AuthContext
from tests.conftest import Acquirers, Api, Merchant


def _call(m: Merchant, key: str | None = None) -> Call:
    auth = AuthContext(account_id=m.account_id, livemode=False, key_id="k", kind="secret")
    return Call(
        auth=auth,
        request_id="req_test",
        idempotency_key=key,
        source_ip="127.0.0.1",
        idempotent=key is not None,
    )


def test_takeover_after_crash_resumes_instead_of_charging_twice(
    api: Api, gateway: Gateway, merchant: Merchant
) -> None:
    params = {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    # A first request reserved the key and created the intent, then its worker died.
    from paywarden.idempotency.service import fingerprint
    from tests.conftest import flatten

    fp = fingerprint("POST", "/v1/payment_intents", {"~key": "secret", **flatten(params)})
    gateway.idempotency.begin(
        account_id=merchant.account_id,
        livemode=False,
        key="order-42",
        method="POST",
        path="/v1/payment_intents",
        fp=fp,
        now=time.time(),
    )
    pi_id = routes._create_intent(gateway, _call(merchant, "order-42"), dict(params))
    with gateway.db.write() as s:
        s.execute(update(IdempotencyRecord).values(locked_until=0))
    # The client retries with the same key after the lock expired.
    r = api.post("/v1/payment_intents", params, idem="order-42")
    assert r.status_code == 200, r.text
    assert r.json()["id"] == pi_id
    assert r.json()["status"] == "succeeded"
    with gateway.db.read() as s:
        assert s.scalar(select(func.count()).select_from(PaymentIntent)) == 1


def test_orphaned_pending_attempt_is_reconciled(api: Api, gateway: Gateway) -> None:
    pi = api.post(
        "/v1/payment_intents", {"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"}
    ).json()
    # Record step done, the acquirer charged, then the worker died before settling.
    plan_conn = gateway.router.get("sandbox_a")
    with gateway.db.write() as s:
        intent = s.scalar(select(PaymentIntent).where(PaymentIntent.id == pi["id"]))
        assert intent is not None
        intent.status = "processing"
        from paywarden.payments import methods

        pm = methods.get(
            s, account_id=intent.account_id, livemode=False, pm_id=str(intent.payment_method_id)
        )
        req = gateway.payments._auth_request(intent, pm, None)
        att_id = gateway.payments._add_auth_attempt(s, intent, "sandbox_a", req)
    plan_conn.authorize(
        gateway.payments._attempt_request(req, att_id), idempotency_key=f"pw_{att_id}"
    )
    rec = Reconciler(gateway.payments, interval=0, stale_pending_seconds=0)
    assert rec.run_once() == 1
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["status"] == "succeeded"
    assert plan_conn.lookup_authorization(f"pw_{att_id}").status == "captured"


def test_acquirer_refusing_capture_leaves_intent_capturable(api: Api, gateway: Gateway) -> None:
    pi = api.post(
        "/v1/payment_intents",
        {
            "amount": 900,
            "currency": "usd",
            "confirm": True,
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
        },
    ).json()
    for conn in gateway.router.connectors:
        conn._token = Secret("wrong-token", "acquirer_token")  # type: ignore[attr-defined]
    r = api.post(f"/v1/payment_intents/{pi['id']}/capture")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "acquirer_rejected"
    assert api.get(f"/v1/payment_intents/{pi['id']}").json()["status"] == "requires_capture"
    with gateway.db.read() as s:
        statuses = list(
            s.scalars(select(AcquirerAttempt.status).where(AcquirerAttempt.operation == "capture"))
        )
    assert statuses == ["failed"]


def test_acquirer_refusing_refund_releases_reservation(api: Api, gateway: Gateway) -> None:
    pi = api.post(
        "/v1/payment_intents",
        {"amount": 900, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"},
    ).json()
    tokens = {c.name: c._token for c in gateway.router.connectors}  # type: ignore[attr-defined]
    for conn in gateway.router.connectors:
        conn._token = Secret("wrong-token", "acquirer_token")  # type: ignore[attr-defined]
    r = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 400})
    assert r.status_code == 200
    assert r.json()["status"] == "failed"
    for conn in gateway.router.connectors:
        conn._token = tokens[conn.name]  # type: ignore[attr-defined]
    r2 = api.post("/v1/refunds", {"payment_intent": pi["id"]})
    assert r2.json()["amount"] == 900
    assert r2.json()["status"] == "succeeded"
    with gateway.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Refund)) == 2


def test_publishable_key_cannot_replay_secret_key_response(api: Api, merchant: Merchant) -> None:
    pi = api.post(
        "/v1/payment_intents", {"amount": 500, "currency": "usd", "payment_method": "pm_card_visa"}
    ).json()
    r1 = api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="confirm-1")
    assert r1.status_code == 200
    r2 = api.post(
        f"/v1/payment_intents/{pi['id']}/confirm", idem="confirm-1", key=merchant.publishable_key
    )
    assert r2.status_code == 400
    assert r2.json()["error"]["type"] == "idempotency_error"
    assert "client_secret" not in r2.text


def test_browser_sees_generic_decline_for_stolen_card(api: Api, merchant: Merchant) -> None:
    pi = api.post(
        "/v1/payment_intents",
        {"amount": 500, "currency": "usd", "payment_method": "pm_card_chargeDeclinedStolenCard"},
    ).json()
    r = api.post(
        f"/v1/payment_intents/{pi['id']}/confirm",
        {"client_secret": pi["client_secret"]},
        key=merchant.publishable_key,
    )
    assert r.status_code == 402
    assert r.json()["error"]["decline_code"] == "generic_decline"
    assert "stolen" not in r.text
    got = api.get(
        f"/v1/payment_intents/{pi['id']}",
        {"client_secret": pi["client_secret"], "expand": ["latest_charge"]},
        key=merchant.publishable_key,
    ).json()
    assert got["last_payment_error"]["decline_code"] == "generic_decline"
    assert isinstance(got["latest_charge"], str)
    # The merchant still sees the truth.
    mine = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert mine["last_payment_error"]["decline_code"] == "stolen_card"


def test_permission_denials_are_rate_limited(
    api: Api, gateway: Gateway, merchant: Merchant, clean_acquirers: Acquirers
) -> None:
    limit = gateway.settings.auth_failure_limit
    codes = [
        api.get("/v1/customers", key=merchant.publishable_key).status_code for _ in range(limit + 3)
    ]
    assert codes[:limit] == [403] * limit
    assert codes[limit:] == [429] * 3


def test_oversized_values_are_4xx_on_every_backend(api: Api) -> None:
    assert api.post("/v1/customers", {"name": "n" * 256}).status_code == 200
    assert api.post("/v1/customers", {"description": "d" * 350}).status_code == 200
    email = "a" * 64 + "@" + "b" * 250 + ".com"
    assert api.post("/v1/customers", {"email": email}).status_code == 200
    r = api.post("/v1/customers/" + "c" * 300, {}, idem="long-path")
    assert r.status_code in (400, 404)
    r = api.get("/v1/charges", {"created": {"gt": "9999999999999999999"}})
    assert r.status_code == 400
