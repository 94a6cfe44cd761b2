"""Acquirer faults: unknown outcomes are reconciled, nothing is charged twice,
and concurrent requests on one intent have exactly one effect."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import func, select

from paywarden.acquirers.base import AcquirerConnector, AcquirerError
from paywarden.gateway.container import Gateway
from paywarden.payments.models import AcquirerAttempt, Charge, Refund
from paywarden.payments.reconcile import Reconciler
from tests.conftest import Acquirers, Api


def _pi(api: Api, **kw: Any) -> dict[str, Any]:
    r = api.post(
        "/v1/payment_intents",
        {"amount": 1200, "currency": "eur", "payment_method": "pm_card_visa", **kw},
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _wait_until_acted(conn: AcquirerConnector, key: str, timeout: float = 30.0) -> None:
    """Until the acquirer has processed the authorization under ``key``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.lookup_authorization(key)
            return
        except AcquirerError:  # not found yet (or a lookup slowed by the load)
            assert time.monotonic() < deadline, "the acquirer never processed the request"
            time.sleep(0.05)


# The gateway's acquirer timeout is 1 s. A faulted acquirer answers far later:
# lost_response holds the answer until the caller hangs up, timeout acts after
# 4 s. (At 1.5 s, a gateway thread late by half a second got the answer.)
SLOW_MS = {"lost_response": 30_000, "timeout": 4000}


@pytest.mark.parametrize("mode", ["lost_response", "timeout"])
def test_unknown_outcome_is_reconciled_exactly_once(
    api: Api, gateway: Gateway, clean_acquirers: Acquirers, mode: str
) -> None:
    # Both the call and its immediate retry time out: the outcome is unknown.
    clean_acquirers.faults(
        "sandbox_a", mode=mode, latency_ms=SLOW_MS[mode], count=2, operations=["authorize"]
    )
    pi = _pi(api)
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "processing"
    # No failover happened: acquirer B never saw this payment.
    with gateway.db.read() as s:
        atts = list(
            s.scalars(select(AcquirerAttempt).where(AcquirerAttempt.payment_intent_id == pi["id"]))
        )
    assert [a.acquirer for a in atts] == ["sandbox_a"]
    assert atts[0].status == "unknown"
    processing = api.get("/v1/events", {"type": "payment_intent.processing"}).json()["data"]
    assert [e["data"]["object"]["id"] for e in processing] == [pi["id"]]
    # A second confirm is refused while the outcome is unknown.
    r2 = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r2.status_code == 400
    clean_acquirers.reset()
    # Let the sandbox finish the slow request it was holding.
    _wait_until_acted(gateway.router.get("sandbox_a"), atts[0].idempotency_key)
    settled = Reconciler(gateway.payments, interval=0).run_once()
    assert settled == 1
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["status"] == "succeeded"
    with gateway.db.read() as s:
        charges = s.scalar(
            select(func.count()).select_from(Charge).where(Charge.payment_intent_id == pi["id"])
        )
    assert charges == 1
    # The acquirer itself holds exactly one authorization under our key.
    conn = gateway.router.get("sandbox_a")
    res = conn.lookup_authorization(atts[0].idempotency_key)
    assert res.status == "captured"
    events = api.get("/v1/events", {"type": "payment_intent.succeeded"}).json()["data"]
    assert sum(1 for e in events if e["data"]["object"]["id"] == pi["id"]) == 1


def test_lost_response_recovered_by_immediate_retry(
    api: Api, gateway: Gateway, clean_acquirers: Acquirers
) -> None:
    clean_acquirers.faults(
        "sandbox_a",
        mode="lost_response",
        latency_ms=SLOW_MS["lost_response"],
        count=1,
        operations=["authorize"],
    )
    pi = _pi(api)
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.json()["status"] == "succeeded"
    with gateway.db.read() as s:
        atts = list(
            s.scalars(select(AcquirerAttempt).where(AcquirerAttempt.payment_intent_id == pi["id"]))
        )
    assert len(atts) == 1
    assert (
        gateway.router.get("sandbox_a").lookup_authorization(atts[0].idempotency_key).status
        == "captured"
    )


def test_circuit_breaker_opens_and_skips_dead_acquirer(
    api: Api, gateway: Gateway, clean_acquirers: Acquirers
) -> None:
    clean_acquirers.faults("sandbox_a", mode="error_503", count=None)
    for _ in range(gateway.settings.circuit_failure_threshold):
        assert _pi(api, confirm=True)["status"] == "succeeded"
    assert gateway.router.state("sandbox_a") == "open"
    _pi(api, confirm=True)
    with gateway.db.read() as s:
        a_attempts = s.scalar(
            select(func.count())
            .select_from(AcquirerAttempt)
            .where(AcquirerAttempt.acquirer == "sandbox_a")
        )
    # Once open, A is no longer tried.
    assert a_attempts == gateway.settings.circuit_failure_threshold


def test_refund_with_acquirer_down_completes_later(
    api: Api, gateway: Gateway, clean_acquirers: Acquirers
) -> None:
    pi = _pi(api, confirm=True)
    with gateway.db.read() as s:
        acq = s.scalar(select(Charge.acquirer).where(Charge.id == pi["latest_charge"]))
    assert acq is not None
    clean_acquirers.faults(acq, mode="error_503", count=None, operations=["refund"])
    r = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 200})
    assert r.status_code == 200
    assert r.json()["status"] == "pending"
    # The pending refund holds its amount: no over-refund while it is in flight.
    r2 = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 1001})
    assert r2.status_code == 400
    clean_acquirers.reset()
    assert Reconciler(gateway.payments, interval=0).run_once() == 1
    rf = api.get(f"/v1/refunds/{r.json()['id']}").json()
    assert rf["status"] == "succeeded"


def test_concurrent_confirms_have_one_effect(api: Api, gateway: Gateway) -> None:
    pi = _pi(api)
    with ThreadPoolExecutor(8) as ex:
        codes = list(
            ex.map(
                lambda _: api.post(f"/v1/payment_intents/{pi['id']}/confirm").status_code, range(8)
            )
        )
    assert codes.count(200) == 1
    assert set(codes) <= {200, 400}
    with gateway.db.read() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(Charge).where(Charge.payment_intent_id == pi["id"])
            )
            == 1
        )


def test_concurrent_captures_have_one_effect(api: Api, gateway: Gateway) -> None:
    pi = _pi(api, capture_method="manual", confirm=True)
    with ThreadPoolExecutor(8) as ex:
        rs = list(
            ex.map(
                lambda _: api.post(
                    f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": 1000}
                ),
                range(8),
            )
        )
    assert [r.status_code for r in rs].count(200) == 1
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["amount_received"] == 1000


def test_concurrent_refunds_never_exceed_captured(api: Api, gateway: Gateway) -> None:
    pi = _pi(api, confirm=True)  # 1200 captured
    with ThreadPoolExecutor(8) as ex:
        rs = list(
            ex.map(
                lambda _: api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 500}),
                range(8),
            )
        )
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) == 2
    with gateway.db.read() as s:
        total = s.scalar(
            select(func.sum(Refund.amount)).where(Refund.payment_intent_id == pi["id"])
        )
    assert total == 1000
