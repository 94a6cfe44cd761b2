"""Value list membership in rules, through the API: a payment's values are
matched the way the list's items are stored, as in Radar. Text is
case-insensitive (except in `case_sensitive_string` lists) and an email list
item names a mailbox, normalized like the payment's `:email:`."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_fraud_decisions import _card_pm, _cards, _pay, _rule
from tests.conftest import Api


def _list(api: Api, alias: str, item_type: str | None = None) -> str:
    body = {"alias": alias, "name": alias.replace("_", " ")}
    if item_type is not None:
        body["item_type"] = item_type
    r = api.post("/v1/radar/value_lists", body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _add(api: Api, list_id: str, value: str) -> dict[str, Any]:
    r = api.post("/v1/radar/value_list_items", {"value_list": list_id, "value": value})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _customer(api: Api) -> str:
    r = api.post("/v1/customers", {"name": "Jane"})
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def _mixed_case_customer(api: Api) -> str:
    for _ in range(20):
        cus = _customer(api)
        if cus != cus.lower():
            return cus
    raise AssertionError("no customer id with an upper-case letter")


def _deciding_rule(api: Api, r: httpx.Response) -> str | None:
    if r.status_code == 200:
        charge_id = r.json()["latest_charge"]
    else:
        assert r.status_code == 402, r.text
        charge_id = r.json()["error"]["payment_intent"]["latest_charge"]
    charge = api.get(f"/v1/charges/{charge_id}").json()
    rule = charge["outcome"]["rule"]
    return None if rule is None else str(rule)


def test_the_issue_example_a_string_list_of_customer_ids(api: Api) -> None:
    """`:customer: in @trusted_customers` with the default `string` type."""
    trusted = _list(api, "trusted_customers")
    cus = _mixed_case_customer(api)
    _add(api, trusted, cus)
    block = _rule(api, "Block if :amount: = 4321")
    allow = _rule(api, "Allow if :customer: in @trusted_customers")
    r = _pay(api, amount=4321, customer=cus)
    assert r.status_code == 200, r.text
    assert _deciding_rule(api, r) == allow
    # Someone else is not trusted.
    r = _pay(api, amount=4321, customer=_customer(api))
    assert r.status_code == 402
    assert _deciding_rule(api, r) == block


def test_a_string_list_matches_a_country_whatever_its_case(api: Api) -> None:
    risky = _list(api, "risky_countries")
    item = _add(api, risky, "US")  # pm_card_visa's card_country is 'US'
    assert item["value"] == "us"  # string items are stored (and shown) lowercased
    rule = _rule(api, "Block if :card_country: in @risky_countries")
    r = _pay(api)
    assert r.status_code == 402, r.text
    assert _deciding_rule(api, r) == rule


def test_a_mixed_case_item_in_a_string_list_matches(api: Api) -> None:
    brands = _list(api, "blocked_brands")
    _add(api, brands, "VISA")
    rule = _rule(api, "Block if :card_brand: in @blocked_brands")
    r = _pay(api)
    assert r.status_code == 402, r.text
    assert _deciding_rule(api, r) == rule


def test_a_case_sensitive_string_list_stays_case_sensitive(api: Api) -> None:
    exact = _list(api, "exact_customers", "case_sensitive_string")
    cus = _mixed_case_customer(api)
    item = _add(api, exact, cus.lower())
    assert item["value"] == cus.lower()
    _rule(api, "Block if :customer: in @exact_customers")
    assert _pay(api, customer=cus).status_code == 200
    _add(api, exact, cus)
    assert _pay(api, customer=cus).status_code == 402


def test_a_customer_id_list_matches_the_id_as_given(api: Api) -> None:
    vip = _list(api, "vip_customers", "customer_id")
    cus = _mixed_case_customer(api)
    assert _add(api, vip, cus)["value"] == cus  # an id is shown as given
    rule = _rule(api, "Block if :customer: in @vip_customers")
    r = _pay(api, customer=cus)
    assert r.status_code == 402
    assert _deciding_rule(api, r) == rule
    assert _pay(api, customer=_customer(api)).status_code == 200


def test_a_country_list_matches_whatever_case_was_entered(api: Api) -> None:
    countries = _list(api, "block_countries", "country")
    assert _add(api, countries, "us")["value"] == "US"
    rule = _rule(api, "Block if :card_country: in @block_countries")
    r = _pay(api)
    assert r.status_code == 402
    assert _deciding_rule(api, r) == rule


def test_an_email_list_item_names_a_gmail_mailbox(api: Api) -> None:
    emails = _list(api, "blocked_emails", "email")
    item = _add(api, emails, "John.Doe+x@gmail.com")
    assert item["value"] == "johndoe@gmail.com"  # the mailbox the address reaches
    again = api.post(
        "/v1/radar/value_list_items", {"value_list": emails, "value": "johndoe@gmail.com"}
    )
    assert again.status_code == 400  # the same mailbox is already listed
    rule = _rule(api, "Block if :email: in @blocked_emails")
    for address in ("johndoe@gmail.com", "John.Doe@gmail.com", "j.o.h.n.doe+shop@googlemail.com"):
        r = _pay(api, receipt_email=address)
        assert r.status_code == 402, address
        assert _deciding_rule(api, r) == rule
    r = _pay(api, paywarden_risk_context={"email": "JohnDoe@GMail.com"})
    assert r.status_code == 402
    assert _pay(api, receipt_email="jane.doe@gmail.com").status_code == 200


def test_an_email_list_item_matches_other_domains_case_insensitively(api: Api) -> None:
    emails = _list(api, "blocked_emails", "email")
    assert _add(api, emails, "Fraudster@Example.com")["value"] == "fraudster@example.com"
    _rule(api, "Block if :email: in @blocked_emails")
    assert _pay(api, receipt_email="FRAUDSTER@example.COM").status_code == 402
    # Dots and tags mean something outside Gmail.
    assert _pay(api, receipt_email="fraud.ster@example.com").status_code == 200
    assert _pay(api, receipt_email="fraudster+x@example.com").status_code == 200


def test_a_card_fingerprint_list_matches_whatever_case_was_entered(api: Api) -> None:
    pm = _card_pm(api, _cards(1, seed=41)[0])
    fingerprint = api.get(f"/v1/payment_methods/{pm}").json()["card"]["fingerprint"]
    assert fingerprint == fingerprint.lower()  # the gateway makes them in lower case
    cards = _list(api, "stolen_cards", "card_fingerprint")
    assert _add(api, cards, fingerprint.upper())["value"] == fingerprint
    rule = _rule(api, "Block if :card_fingerprint: in @stolen_cards")
    r = _pay(api, payment_method=pm)
    assert r.status_code == 402, r.text
    assert _deciding_rule(api, r) == rule


def test_an_ip_list_matches_the_canonical_address(api: Api) -> None:
    ips = _list(api, "blocked_ips", "ip_address")
    assert _add(api, ips, "2001:DB8:0:0::7")["value"] == "2001:db8::7"
    _rule(api, "Block if :ip_address: in @blocked_ips")
    r = _pay(api, paywarden_risk_context={"ip_address": "2001:db8::7"})
    assert r.status_code == 402
    r = _pay(api, paywarden_risk_context={"ip_address": "2001:0DB8::0007"})
    assert r.status_code == 402
    assert _pay(api, paywarden_risk_context={"ip_address": "2001:db8::8"}).status_code == 200
