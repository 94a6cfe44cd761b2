"""The fraud engine's decision inside confirm, through the API: allow, step-up,
review, block, shadow rules, card testing, feedback and automatic block lists."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from paywarden.fraud.engine import RatesError, model_key
from paywarden.fraud.features import Tx
from paywarden.gateway.container import Gateway, build_gateway, recent_fraud_reports
from tests.api.test_payment_flows import _complete_3ds
from tests.conftest import Api, Merchant, make_merchant


def _luhn_complete(prefix: str) -> str:
    digits = [int(d) for d in prefix]
    for check in range(10):
        total = 0
        for i, d in enumerate(reversed([*digits, check])):
            doubled = d * 2 if i % 2 == 1 else d
            total += doubled - 9 if doubled > 9 else doubled
        if total % 10 == 0:
            return prefix + str(check)
    raise AssertionError("unreachable")


def _cards(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [_luhn_complete("424242" + "".join(rng.choice("0123456789") for _ in range(9)))
            for _ in range(n)]  # fmt: skip


def _rule(api: Api, text: str, mode: str = "active") -> str:
    r = api.post("/v1/paywarden/fraud/rules", {"rule": text, "reason": "test", "mode": mode})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _pay(api: Api, amount: int = 2000, **extra: Any) -> httpx.Response:
    params: dict[str, Any] = {
        "amount": amount,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    params.update(extra)
    return api.post("/v1/payment_intents", params)


def _charge(api: Api, charge_id: str) -> dict[str, Any]:
    r = api.get(f"/v1/charges/{charge_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _card_pm(api: Api, number: str) -> str:
    r = api.post(
        "/v1/payment_methods",
        {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034}},
    )
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def test_an_allowed_payment_carries_its_score_and_reasons(api: Api) -> None:
    r = _pay(api, payment_method=_card_pm(api, _cards(1, seed=9)[0]))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    outcome = _charge(api, r.json()["latest_charge"])["outcome"]
    assert outcome["type"] == "authorized"
    assert outcome["network_status"] == "approved_by_network"
    assert isinstance(outcome["risk_score"], int) and 0 <= outcome["risk_score"] <= 99
    assert outcome["risk_level"] == "normal"
    assert outcome["rule"] is None
    assert outcome["paywarden_risk"]["action"] == "allow"


def test_a_block_rule_declines_before_anything_is_sent(api: Api) -> None:
    rule = _rule(api, "Block if :amount_in_usd: > 900")
    r = _pay(api, amount=95_000)
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["type"] == "card_error" and err["code"] == "card_declined"
    assert err["decline_code"] == "fraudulent"
    assert err["message"] == "Your card was declined."
    pi = err["payment_intent"]
    assert pi["status"] == "requires_payment_method"
    charge = _charge(api, pi["latest_charge"])
    assert charge["status"] == "failed"
    out = charge["outcome"]
    assert out["type"] == "blocked" and out["network_status"] == "not_sent_to_network"
    assert out["rule"] == rule and out["reason"] == "rule"
    assert rule in out["seller_message"]
    # A smaller payment passes the same rule set.
    assert _pay(api, amount=5_000).json()["status"] == "succeeded"


def test_a_shadow_rule_changes_nothing_but_is_reported(api: Api) -> None:
    shadow = _rule(api, "Block if :amount: > 0", mode="shadow")
    r = _pay(api)
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    out = _charge(api, r.json()["latest_charge"])["outcome"]
    assert out["type"] == "authorized" and out["rule"] is None
    assert [s["id"] for s in out["paywarden_risk"]["shadow_rules"]] == [shadow]


def _pay_through_3ds(api: Api, amount: int) -> dict[str, Any]:
    """Confirm, expect the step-up, authenticate; the intent as it ends up."""
    r = _pay(api, amount=amount, return_url="https://merchant.example/return")
    assert r.status_code == 200, r.text
    pi = r.json()
    assert pi["status"] == "requires_action", pi
    done = _complete_3ds(pi["next_action"]["redirect_to_url"]["url"], "authenticated")
    assert api.client.get(done.headers["location"], follow_redirects=False).status_code == 303
    return dict(api.get(f"/v1/payment_intents/{pi['id']}").json())


def test_a_request_3ds_rule_steps_up_then_the_payment_continues(api: Api) -> None:
    rule = _rule(api, "Request 3DS if :amount: = 7777")
    final = _pay_through_3ds(api, 7777)
    assert final["status"] == "succeeded"
    assert _charge(api, final["latest_charge"])["outcome"]["rule"] == rule


def test_a_request_3ds_rule_does_not_lift_a_block(api: Api) -> None:
    """A card on the automatic block list stays blocked when a 3-D Secure rule
    also matches: the block applies before any challenge."""
    pm = _card_pm(api, _cards(1, seed=11)[0])
    paid = _pay(api, payment_method=pm)
    assert paid.status_code == 200, paid.text
    refund = api.post("/v1/refunds", {"payment_intent": paid.json()["id"], "reason": "fraudulent"})
    assert refund.status_code == 200, refund.text
    _rule(api, "Request 3DS if :amount_in_usd: > 10")
    again = _pay(api, payment_method=_card_pm(api, _cards(1, seed=11)[0]),
                 return_url="https://merchant.example/return")  # fmt: skip
    assert again.status_code == 402, again.text
    charge = _charge(api, again.json()["error"]["payment_intent"]["latest_charge"])
    assert charge["outcome"]["rule"] == "rule_default_blocked_card"


def test_a_review_rule_holds_a_payment_after_3ds(api: Api) -> None:
    three_ds = _rule(api, "Request 3DS if :amount: = 6666")
    review = _rule(api, "Review if :amount: > 6000")
    final = _pay_through_3ds(api, 6666)
    assert final["status"] == "requires_capture" and final["amount_received"] == 0
    charge = _charge(api, final["latest_charge"])
    assert charge["captured"] is False and charge["outcome"]["type"] == "manual_review"
    assert charge["outcome"]["rule"] == review != three_ds
    assert [x["id"] for x in api.get("/v1/reviews").json()["data"]] == [charge["review"]]
    assert final["review"] == charge["review"]
    approved = api.post(f"/v1/reviews/{charge['review']}/approve")
    assert approved.status_code == 200, approved.text
    assert api.get(f"/v1/payment_intents/{final['id']}").json()["status"] == "succeeded"


def test_review_holds_funds_until_approved(api: Api) -> None:
    _rule(api, "Review if :amount: = 5555")
    r = _pay(api, amount=5555)
    assert r.status_code == 200, r.text
    pi = r.json()
    assert pi["status"] == "requires_capture" and pi["amount_received"] == 0
    charge = _charge(api, pi["latest_charge"])
    assert charge["captured"] is False and charge["outcome"]["type"] == "manual_review"
    review_id = charge["review"]
    assert review_id.startswith("prv_")
    assert pi["review"] == review_id  # the intent names its review, as Stripe's does
    assert charge["outcome"]["reason"] == "rule"
    # Nobody captures around an open review.
    cap = api.post(f"/v1/payment_intents/{pi['id']}/capture")
    assert cap.status_code == 400 and review_id in cap.json()["error"]["message"]
    queue = api.get("/v1/reviews").json()
    assert [x["id"] for x in queue["data"]] == [review_id]
    review = api.get(f"/v1/reviews/{review_id}").json()
    assert review["object"] == "review" and review["open"] is True
    assert review["reason"] == "rule" and review["payment_intent"] == pi["id"]
    approved = api.post(f"/v1/reviews/{review_id}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["open"] is False and approved.json()["closed_reason"] == "approved"
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["status"] == "succeeded" and final["amount_received"] == 5555
    assert api.get("/v1/reviews").json()["data"] == []
    again = api.post(f"/v1/reviews/{review_id}/approve")
    assert again.status_code == 400
    types = [e["type"] for e in api.get("/v1/events", {"limit": 100}).json()["data"]]
    assert "review.opened" in types and "review.closed" in types


def test_a_fraud_report_does_not_release_a_held_payment(api: Api) -> None:
    _rule(api, "Review if :amount: = 5557")
    pi = _pay(api, amount=5557).json()
    charge = pi["latest_charge"]
    report = api.post("/v1/paywarden/fraud/reports", {"charge": charge, "label": "fraudulent"})
    assert report.status_code == 200
    review = api.get(f"/v1/reviews/{_charge(api, charge)['review']}").json()
    assert review["open"] is True
    assert api.post(f"/v1/payment_intents/{pi['id']}/capture").status_code == 400


def test_canceling_a_held_payment_closes_its_review(api: Api) -> None:
    _rule(api, "Review if :amount: = 5556")
    pi = _pay(api, amount=5556).json()
    review_id = _charge(api, pi["latest_charge"])["review"]
    canceled = api.post(f"/v1/payment_intents/{pi['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    review = api.get(f"/v1/reviews/{review_id}").json()
    assert review["open"] is False and review["closed_reason"] == "canceled"


def test_card_testing_from_one_ip_is_blocked_within_a_few_attempts(api: Api) -> None:
    attacker = {"ip_address": "203.0.113.9", "user_agent": "curl/8"}
    statuses = []
    for number in _cards(8, seed=1):
        pm = _card_pm(api, number)
        r = _pay(api, amount=100, payment_method=pm, paywarden_risk_context=attacker)
        statuses.append(r.status_code)
    assert statuses[:4] == [200] * 4
    assert statuses[4:] == [402] * 4  # the fifth distinct card in the hour is blocked
    # A normal customer on another address keeps paying.
    normal = _pay(api, paywarden_risk_context={"ip_address": "198.51.100.20"})
    assert normal.status_code == 200 and normal.json()["status"] == "succeeded"


def test_one_merchants_card_testing_does_not_block_another_merchant_or_mode(
    api: Api, merchant: Merchant
) -> None:
    """Velocity counters are per account and mode: naming an IP address in one
    merchant's traffic must not let it block that address elsewhere."""
    shared_ip = {"ip_address": "198.51.100.99"}
    codes = []
    for number in _cards(5, seed=7):
        pm = _card_pm(api, number)
        codes.append(_pay(api, amount=100, payment_method=pm, paywarden_risk_context=shared_ip))
    assert [c.status_code for c in codes] == [200, 200, 200, 200, 402]

    other = Api(api.client, make_merchant(merchant.gw, "Other").secret_key)
    for number in _cards(4, seed=8):
        r = _pay(other, amount=100, payment_method=_card_pm(other, number),
                 paywarden_risk_context=shared_ip)  # fmt: skip
        assert r.status_code == 200, r.text

    live = Api(api.client, merchant.key("secret", livemode=True))
    r = _pay(live, amount=100, payment_method=_card_pm(live, _cards(1, seed=9)[0]),
             paywarden_risk_context=shared_ip)  # fmt: skip
    assert r.status_code == 200, r.text
    # ...while the first merchant's test mode still blocks a further new card there.
    again = _pay(api, amount=100, payment_method=_card_pm(api, _cards(1, seed=10)[0]),
                 paywarden_risk_context=shared_ip)  # fmt: skip
    assert again.status_code == 402


def test_card_testing_from_one_device_is_blocked(api: Api, merchant: Merchant) -> None:
    session = api.post(
        "/v1/paywarden/device_sessions",
        {"signals": {"screen": "1920x1080", "timezone": "Europe/Paris", "platform": "Linux"}},
        key=merchant.publishable_key,
    )
    assert session.status_code == 200, session.text
    token = session.json()["token"]
    codes = []
    for i, number in enumerate(_cards(6, seed=2)):
        pm = _card_pm(api, number)
        # A new IP address each time: the device gives the attacker away.
        ctx = {"ip_address": f"192.0.2.{i + 1}", "device_token": token}
        codes.append(_pay(api, amount=100, payment_method=pm, paywarden_risk_context=ctx))
    assert [c.status_code for c in codes] == [200, 200, 200, 200, 402, 402]
    out = codes[-1].json()["error"]["payment_intent"]["latest_charge"]
    assert _charge(api, out)["outcome"]["rule"] == "rule_default_cards_per_device"


def test_reported_fraud_blocks_the_card_from_then_on(api: Api) -> None:
    pm = _card_pm(api, _cards(1, seed=3)[0])
    pi = _pay(api, payment_method=pm, paywarden_risk_context={"ip_address": "198.51.100.7"})
    assert pi.status_code == 200
    refund = api.post("/v1/refunds", {"payment_intent": pi.json()["id"], "reason": "fraudulent"})
    assert refund.status_code == 200, refund.text
    reported = _charge(api, pi.json()["latest_charge"])
    assert reported["fraud_details"] == {"user_report": "fraudulent"}
    lists = api.get("/v1/radar/value_lists", {"alias": "paywarden_blocked_cards"}).json()
    assert len(lists["data"]) == 1 and lists["data"][0]["list_items"]["data"]
    ips = api.get("/v1/radar/value_lists", {"alias": "paywarden_blocked_ips"}).json()
    assert [i["value"] for i in ips["data"][0]["list_items"]["data"]] == ["198.51.100.7"]
    again = _pay(api, payment_method=_card_pm(api, _cards(1, seed=3)[0]))
    assert again.status_code == 402
    charge = _charge(api, again.json()["error"]["payment_intent"]["latest_charge"])
    assert charge["outcome"]["rule"] == "rule_default_blocked_card"


def test_an_explicit_report_records_the_label_delay(api: Api) -> None:
    pi = _pay(api).json()
    r = api.post("/v1/paywarden/fraud/reports", {"charge": pi["latest_charge"], "label": "safe"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "safe" and body["delay_seconds"] >= 0
    assert _charge(api, pi["latest_charge"])["fraud_details"] == {"user_report": "safe"}
    bad = api.post("/v1/paywarden/fraud/reports", {"charge": "ch_nope", "label": "fraudulent"})
    assert bad.status_code == 404
    wrong = api.post("/v1/paywarden/fraud/reports", {"charge": pi["latest_charge"], "label": "x"})
    assert wrong.status_code == 400


def test_a_bad_risk_context_is_a_clean_400(api: Api) -> None:
    r = _pay(api, paywarden_risk_context={"ip_address": "not-an-ip"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "paywarden_risk_context[ip_address]"
    r = _pay(api, paywarden_risk_context={"ip_address": "2001:db8::1%evil"})
    assert r.status_code == 400  # an IPv6 zone would make every suffix a new address
    r = _pay(api, paywarden_risk_context={"shoe_size": "44"})
    assert r.status_code == 400
    assert api.get("/v1/payment_intents").json()["data"] == []


def test_reported_labels_are_exported_for_training(
    api: Api, gateway: Gateway, tmp_path: Path
) -> None:
    from paywarden.fraud.backtest import read_transactions
    from paywarden.fraud.labels import export_csv

    good = _pay(api, amount=1500).json()
    bad = _pay(api, amount=2500).json()
    api.post("/v1/refunds", {"payment_intent": bad["id"], "reason": "fraudulent"})
    path = tmp_path / "labelled.csv"
    with path.open("w", encoding="utf-8") as fh:
        assert export_csv(gateway.db, fh) == 2
    data = read_transactions([path])
    assert sorted(data.fraud.tolist()) == [0, 1]
    rows = path.read_text().splitlines()
    assert rows[0] == "transaction_id,tx_datetime,customer_id,terminal_id,tx_amount,tx_fraud"
    assert any(r.startswith(good["latest_charge"]) and r.endswith(",15.00,0") for r in rows)
    assert any(r.startswith(bad["latest_charge"]) and r.endswith(",25.00,1") for r in rows)


def test_stripe_test_cards_keep_their_documented_behaviour(api: Api) -> None:
    # Everybody's tests share pm_card_visa's "card": many payments of varied
    # amounts on it are not a stolen card, and it gets no model score.
    for amount in (500, 90_000, 1_000, 75_000, 2_000, 99_000, 800):
        r = _pay(api, amount=amount)
        assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    out = _charge(api, r.json()["latest_charge"])["outcome"]
    assert out["risk_score"] is None and out["risk_level"] == "normal"
    for _ in range(7):  # a declining test card keeps declining, it is not blocked
        d = _pay(api, payment_method="pm_card_chargeDeclined")
        assert d.status_code == 402 and d.json()["error"]["decline_code"] == "generic_decline"


def test_fraud_reports_are_replayed_when_the_engine_restarts(api: Api, merchant: Merchant) -> None:
    """The reports the engine rebuilds its model state from at start: fraud and
    disputes on recent payments, not "safe" ones."""
    paid = [_pay(api).json() for _ in range(3)]
    for pi, label in zip(paid, ("fraudulent", "dispute", "safe"), strict=True):
        r = api.post("/v1/paywarden/fraud/reports", {"charge": pi["latest_charge"], "label": label})
        assert r.status_code == 200, r.text
    reports = recent_fraud_reports(merchant.gw.db, since=0)
    assert [pi_id for pi_id, _ in reports] == [paid[0]["id"], paid[1]["id"]]
    assert recent_fraud_reports(merchant.gw.db, since=time.time() + 60) == []


def test_configured_reference_rates_reach_the_engine(gateway: Gateway, tmp_path: Path) -> None:
    rates = tmp_path / "rates.csv"
    rates.write_text("currency,usd_per_unit\nthb,0.029\n", encoding="utf-8")
    settings = gateway.settings.model_copy(update={"fraud_usd_rates_path": rates})
    gw = build_gateway(settings, gateway.secrets)
    try:
        assert gw.payments.fraud is not None
        assert gw.payments.fraud.usd_rates["thb"] == Decimal("0.029")
    finally:
        gw.close()
    rates.write_text("currency,usd_per_unit\nthb,zero\n", encoding="utf-8")
    with pytest.raises(RatesError, match=r"rates\.csv:2"):
        build_gateway(settings, gateway.secrets)


def test_a_report_taken_by_one_worker_reaches_the_others(api: Api, gateway: Gateway) -> None:
    """Each worker keeps its own model state; reports reach every worker."""
    pm = _card_pm(api, _cards(1, seed=12)[0])
    pi = _pay(api, payment_method=pm).json()
    fingerprint = api.get(f"/v1/payment_methods/{pm}").json()["card"]["fingerprint"]
    other = build_gateway(gateway.settings, gateway.secrets)  # a second worker, started now
    try:
        engine = other.payments.fraud
        assert engine is not None and engine._features is not None
        r = api.post(
            "/v1/paywarden/fraud/reports", {"charge": pi["latest_charge"], "label": "dispute"}
        )
        assert r.status_code == 200, r.text
        later = time.monotonic() + 3600
        with other.db.read() as s:
            assert engine.sync_labels(s, now=later) == 1
            assert engine.sync_labels(s, now=later + 10) == 0  # each report once
        # The report reaches the card's history as reported fraud.
        known = engine._features.names.index("customer_known_frauds")
        tx = Tx(tx_id="pi_later", ts=time.time() + 60, customer=model_key(fingerprint, False),
                terminal=pi["id"], amount=10.0)  # fmt: skip
        assert engine._features.features(tx)[known] == 1
        # The worker that took the report does not count it twice.
        own = gateway.payments.fraud
        assert own is not None
        with gateway.db.read() as s:
            assert own.sync_labels(s, now=later) == 0
    finally:
        other.close()
