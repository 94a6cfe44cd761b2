"""Stripe's idempotency contract, over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from paywarden.customers.models import Customer
from paywarden.gateway.container import Gateway
from paywarden.idempotency.models import IdempotencyRecord
from paywarden.payments.models import PaymentIntent
from tests.conftest import Acquirers, Api, Merchant


def _count(gw: Gateway, model: type) -> int:
    with gw.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_replay_returns_the_first_response(api: Api, gateway: Gateway) -> None:
    r1 = api.post("/v1/customers", {"email": "a@example.com"}, idem="key-1")
    r2 = api.post("/v1/customers", {"email": "a@example.com"}, idem="key-1")
    assert r1.status_code == r2.status_code == 200
    assert r1.json() == r2.json()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    assert _count(gateway, Customer) == 1


def test_same_key_different_parameters(api: Api) -> None:
    api.post("/v1/customers", {"email": "a@example.com"}, idem="key-2")
    r = api.post("/v1/customers", {"email": "b@example.com"}, idem="key-2")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "idempotency_error"


def test_same_key_other_endpoint(api: Api) -> None:
    api.post("/v1/customers", {}, idem="key-3")
    r = api.post("/v1/payment_intents", {"amount": 100, "currency": "usd"}, idem="key-3")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "idempotency_error"


def test_keys_are_scoped_to_account_and_mode(
    api: Api, gateway: Gateway, merchant: Merchant
) -> None:
    from tests.conftest import make_merchant

    other = make_merchant(gateway, "Other")
    r1 = api.post("/v1/customers", {"email": "a@example.com"}, idem="shared")
    r2 = api.post("/v1/customers", {"email": "a@example.com"}, idem="shared", key=other.secret_key)
    live = merchant.key("secret", True)
    r3 = api.post("/v1/customers", {"email": "a@example.com"}, idem="shared", key=live)
    ids = {r1.json()["id"], r2.json()["id"], r3.json()["id"]}
    assert len(ids) == 3
    assert r3.json()["livemode"] is True


def test_errors_while_executing_are_stored_and_replayed(api: Api, gateway: Gateway) -> None:
    pi = api.post(
        "/v1/payment_intents",
        {"amount": 500, "currency": "usd", "payment_method": "pm_card_chargeDeclined"},
    ).json()
    r1 = api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="decline-1")
    assert r1.status_code == 402
    # The intent can now be retried with another card, but the key replays the decline.
    r2 = api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="decline-1")
    assert r2.status_code == 402
    assert r2.json() == r1.json()
    assert r2.headers.get("Idempotent-Replayed") == "true"


def test_validation_failures_are_not_stored(api: Api, gateway: Gateway) -> None:
    r1 = api.post("/v1/payment_intents", {"amount": "abc", "currency": "usd"}, idem="val-1")
    assert r1.status_code == 400
    with gateway.db.read() as s:
        assert s.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "val-1")) is None
    r2 = api.post("/v1/payment_intents", {"amount": 100, "currency": "usd"}, idem="val-1")
    assert r2.status_code == 200


def test_key_too_long(api: Api) -> None:
    r = api.post("/v1/customers", {}, idem="k" * 256)
    assert r.status_code == 400
    assert api.post("/v1/customers", {}, idem="k" * 255).status_code == 200


def test_concurrent_same_key_gets_409(
    api: Api, gateway: Gateway, clean_acquirers: Acquirers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold the first confirm at the acquirer until the second one has been
    # answered: it is in flight then, however slow the machine (a fixed sleep
    # and a slow acquirer raced both the second request and the 1 s timeout).
    at_acquirer = threading.Event()
    release = threading.Event()
    for conn in gateway.router.connectors:

        def held(*args: Any, _authorize: Any = conn.authorize, **kwargs: Any) -> Any:
            at_acquirer.set()
            assert release.wait(60)
            return _authorize(*args, **kwargs)

        monkeypatch.setattr(conn, "authorize", held)
    pi = api.post(
        "/v1/payment_intents", {"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"}
    ).json()
    results: list[int] = []

    def first() -> None:
        results.append(
            api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="inflight").status_code
        )

    t = threading.Thread(target=first)
    t.start()
    try:
        assert at_acquirer.wait(60)
        r = api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="inflight")
    finally:
        release.set()
        t.join(60)
    assert results == [200]
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_key_in_use"
    # Afterwards the key replays the first response.
    r2 = api.post(f"/v1/payment_intents/{pi['id']}/confirm", idem="inflight")
    assert r2.status_code == 200
    assert r2.json()["status"] == "succeeded"


def test_expired_keys_are_forgotten(api: Api, gateway: Gateway) -> None:
    r1 = api.post("/v1/customers", {}, idem="old")
    with gateway.db.write() as s:
        rec = s.scalar(select(IdempotencyRecord).where(IdempotencyRecord.key == "old"))
        assert rec is not None
        rec.created -= 25 * 3600
    r2 = api.post("/v1/customers", {}, idem="old")
    assert r2.json()["id"] != r1.json()["id"]
    assert gateway.idempotency.purge_expired(time.time() + 25 * 3600) >= 1
    assert _count(gateway, PaymentIntent) == 0
