"""The card-payment flows through the HTTP API, against real sandbox acquirers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import Acquirers, Api


def create_pi(api: Api, **kw: object) -> dict[str, Any]:
    data = {"amount": 2000, "currency": "usd", **kw}
    r = api.post("/v1/payment_intents", data)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_automatic_capture_succeeds(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa")
    assert pi["status"] == "requires_confirmation"
    assert pi["object"] == "payment_intent"
    assert pi["livemode"] is False
    assert pi["id"].startswith("pi_")
    assert pi["client_secret"].startswith(pi["id"] + "_secret_")
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["amount_received"] == 2000
    ch = api.get(f"/v1/charges/{body['latest_charge']}").json()
    assert ch["captured"] is True
    assert ch["amount_captured"] == 2000
    assert ch["outcome"]["network_status"] == "approved_by_network"
    assert ch["outcome"]["type"] == "authorized"
    assert ch["payment_method_details"]["card"]["last4"] == "4242"
    assert r.headers["Request-Id"].startswith("req_")


def test_create_with_confirm_and_expand_latest_charge(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_mastercard", confirm=True, expand=["latest_charge"])
    assert pi["status"] == "succeeded"
    assert pi["latest_charge"]["object"] == "charge"
    assert pi["latest_charge"]["payment_method_details"]["card"]["brand"] == "mastercard"


def test_manual_capture_full_and_partial(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert pi["status"] == "requires_capture"
    assert pi["amount_capturable"] == 2000
    r = api.post(f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": 2500})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "amount_too_large"
    r = api.post(f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": 1500})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "succeeded"
    assert done["amount_received"] == 1500
    assert done["amount_capturable"] == 0
    ch = api.get(f"/v1/charges/{done['latest_charge']}").json()
    assert ch["amount_captured"] == 1500
    # A second capture is a wrong state transition.
    r = api.post(f"/v1/payment_intents/{pi['id']}/capture")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "payment_intent_unexpected_state"


@pytest.mark.parametrize(
    ("pm", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", "incorrect_cvc"),
    ],
)
def test_declines_are_card_errors(api: Api, pm: str, code: str, decline_code: str) -> None:
    pi = create_pi(api, payment_method=pm)
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["type"] == "card_error"
    assert err["code"] == code
    assert err["decline_code"] == decline_code
    assert err["payment_intent"]["status"] == "requires_payment_method"
    after = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert after["status"] == "requires_payment_method"
    assert after["last_payment_error"]["decline_code"] == decline_code
    ch = api.get(f"/v1/charges/{after['latest_charge']}").json()
    assert ch["status"] == "failed"
    assert ch["outcome"]["type"] == "issuer_declined"
    # The customer may retry with another card.
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm", {"payment_method": "pm_card_visa"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"


def _complete_3ds(url: str, result: str) -> httpx.Response:
    # The customer's browser: open the page, press a button, follow the redirects.
    page = httpx.get(url, timeout=5)
    assert page.status_code == 200
    assert "authentication" in page.text.lower()
    return httpx.post(
        f"{url}/complete", data={"result": result}, timeout=10, follow_redirects=False
    )


def test_three_d_secure_success(api: Api) -> None:
    pi = create_pi(
        api,
        payment_method="pm_card_threeDSecure2Required",
        confirm=True,
        return_url="https://merchant.example/return",
    )
    assert pi["status"] == "requires_action"
    nxt = pi["next_action"]
    assert nxt["type"] == "redirect_to_url"
    r = _complete_3ds(nxt["redirect_to_url"]["url"], "authenticated")
    assert r.status_code in (302, 303)
    back = r.headers["location"]
    # The ACS sends the browser to the gateway, which finishes the payment.
    assert back.startswith(str(api.client.base_url))
    r2 = api.client.get(back, follow_redirects=False)
    assert r2.status_code == 303, r2.text
    assert r2.headers["location"].startswith("https://merchant.example/return?")
    assert "redirect_status=succeeded" in r2.headers["location"]
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["status"] == "succeeded"
    assert final["next_action"] is None


def test_three_d_secure_failure_returns_to_requires_payment_method(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_authenticationRequired", confirm=True)
    assert pi["status"] == "requires_action"
    r = _complete_3ds(pi["next_action"]["redirect_to_url"]["url"], "failed")
    assert r.status_code in (200, 302, 303)
    # Confirming again asks the acquirer about the authentication.
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "requires_payment_method"
    assert body["last_payment_error"]["code"] == "payment_intent_authentication_failure"


def test_three_d_secure_pending_stays_requires_action(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_threeDSecure2Required", confirm=True)
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 200
    assert r.json()["status"] == "requires_action"


def test_refunds_never_exceed_captured(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", confirm=True)
    r = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 500})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    assert r.json()["object"] == "refund"
    r = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 1501})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "amount_too_large"
    r = api.post("/v1/refunds", {"charge": pi["latest_charge"]})
    assert r.status_code == 200
    assert r.json()["amount"] == 1500
    r = api.post("/v1/refunds", {"payment_intent": pi["id"], "amount": 1})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "charge_already_refunded"
    ch = api.get(f"/v1/charges/{pi['latest_charge']}").json()
    assert ch["amount_refunded"] == 2000
    assert ch["refunded"] is True
    lst = api.get("/v1/refunds", {"payment_intent": pi["id"]}).json()
    assert len(lst["data"]) == 2


def test_refund_of_uncaptured_is_refused(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    r = api.post("/v1/refunds", {"payment_intent": pi["id"]})
    assert r.status_code == 400


def test_cancel_uncaptured_voids(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    r = api.post(
        f"/v1/payment_intents/{pi['id']}/cancel", {"cancellation_reason": "requested_by_customer"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "canceled"
    assert body["cancellation_reason"] == "requested_by_customer"
    assert body["canceled_at"] is not None
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_cancel_succeeded_is_refused(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", confirm=True)
    r = api.post(f"/v1/payment_intents/{pi['id']}/cancel")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "payment_intent_unexpected_state"


def test_update_then_confirm(api: Api) -> None:
    pi = create_pi(api)
    assert pi["status"] == "requires_payment_method"
    r = api.post(
        f"/v1/payment_intents/{pi['id']}",
        {"amount": 3100, "payment_method": "pm_card_visa", "metadata": {"order": "42"}},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "requires_confirmation"
    assert r.json()["metadata"] == {"order": "42"}
    done = api.post(f"/v1/payment_intents/{pi['id']}/confirm").json()
    assert done["amount_received"] == 3100
    r = api.post(f"/v1/payment_intents/{pi['id']}", {"amount": 1})
    assert r.status_code == 400
    # Metadata stays editable after success.
    r = api.post(f"/v1/payment_intents/{pi['id']}", {"metadata": {"order": ""}})
    assert r.status_code == 200
    assert r.json()["metadata"] == {}


def test_confirm_without_payment_method(api: Api) -> None:
    pi = create_pi(api)
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "payment_method"


def test_events_written_for_each_state_change(api: Api) -> None:
    pi = create_pi(api, payment_method="pm_card_visa", confirm=True)
    events = api.get("/v1/events", {"limit": 100}).json()["data"]
    mine = [
        e
        for e in events
        if e["data"]["object"].get("id") == pi["id"]
        or e["data"]["object"].get("payment_intent") == pi["id"]
    ]
    types = {e["type"] for e in mine}
    assert {"payment_intent.created", "charge.succeeded", "payment_intent.succeeded"} <= types
    one = api.get(f"/v1/events/{mine[0]['id']}").json()
    assert one["object"] == "event"
    assert one["id"] == mine[0]["id"]
    only = api.get("/v1/events", {"type": "charge.succeeded"}).json()["data"]
    assert only
    assert all(e["type"] == "charge.succeeded" for e in only)


def test_failover_to_second_acquirer(api: Api, clean_acquirers: Acquirers) -> None:
    clean_acquirers.faults("sandbox_a", mode="error_503", count=None)
    before_b = clean_acquirers.stats("sandbox_b")
    pi = create_pi(api, payment_method="pm_card_visa", confirm=True)
    assert pi["status"] == "succeeded"
    ch = api.get(f"/v1/charges/{pi['latest_charge']}").json()
    assert ch["status"] == "succeeded"
    after_b = clean_acquirers.stats("sandbox_b")
    assert after_b != before_b


def test_all_acquirers_down_fails_cleanly(api: Api, clean_acquirers: Acquirers) -> None:
    for name in clean_acquirers.urls:
        clean_acquirers.faults(name, mode="error_503", count=None)
    pi = create_pi(api, payment_method="pm_card_visa")
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 402
    assert r.json()["error"]["code"] == "processing_error"
    assert api.get(f"/v1/payment_intents/{pi['id']}").json()["status"] == "requires_payment_method"
    clean_acquirers.reset()
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.json()["status"] == "succeeded"


def test_intent_options_are_kept(api: Api) -> None:
    pi = create_pi(
        api,
        setup_future_usage="off_session",
        automatic_payment_methods={"enabled": True},
    )
    assert pi["setup_future_usage"] == "off_session"
    assert pi["automatic_payment_methods"] == {"allow_redirects": "always", "enabled": True}
    r = api.post(f"/v1/payment_intents/{pi['id']}", {"setup_future_usage": "on_session"})
    assert r.json()["setup_future_usage"] == "on_session"
