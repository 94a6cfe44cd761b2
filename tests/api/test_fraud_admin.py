"""Radar value lists and versioned fraud rules through the API."""

from __future__ import annotations

from tests.conftest import Api, Merchant, make_merchant


def test_value_lists_and_items(api: Api) -> None:
    r = api.post(
        "/v1/radar/value_lists",
        {"alias": "blocked_ips", "name": "Blocked IPs", "item_type": "ip_address"},
    )
    assert r.status_code == 200, r.text
    vl = r.json()
    assert vl["id"].startswith("rsl_") and vl["object"] == "radar.value_list"
    assert vl["list_items"]["data"] == []
    dup = api.post("/v1/radar/value_lists", {"alias": "blocked_ips", "name": "again"})
    assert dup.status_code == 400 and dup.json()["error"]["param"] == "alias"
    item = api.post("/v1/radar/value_list_items", {"value_list": vl["id"], "value": "1.2.3.4"})
    assert item.status_code == 200, item.text
    assert item.json()["object"] == "radar.value_list_item"
    bad = api.post("/v1/radar/value_list_items", {"value_list": vl["id"], "value": "nope"})
    assert bad.status_code == 400
    again = api.post("/v1/radar/value_list_items", {"value_list": vl["id"], "value": "1.2.3.4"})
    assert again.status_code == 400
    listed = api.get("/v1/radar/value_list_items", {"value_list": vl["id"]}).json()
    assert [i["value"] for i in listed["data"]] == ["1.2.3.4"]
    found = api.get("/v1/radar/value_lists", {"contains": "1.2.3.4"}).json()
    assert [x["id"] for x in found["data"]] == [vl["id"]]
    emails = api.post(
        "/v1/radar/value_lists", {"alias": "bad_mail", "name": "Mail", "item_type": "email"}
    ).json()
    api.post("/v1/radar/value_list_items", {"value_list": emails["id"], "value": "J.Doe@Gmail.com"})
    # Filters find an item in any form that matches it, as a rule would.
    found = api.get("/v1/radar/value_lists", {"contains": "jdoe+shop@gmail.com"}).json()
    assert [x["id"] for x in found["data"]] == [emails["id"]]
    exact = api.post(
        "/v1/radar/value_lists",
        {"alias": "exact", "name": "Exact", "item_type": "case_sensitive_string"},
    ).json()
    api.post("/v1/radar/value_list_items", {"value_list": exact["id"], "value": "abc"})
    assert api.get("/v1/radar/value_lists", {"contains": "ABC"}).json()["data"] == []
    found = api.get("/v1/radar/value_lists", {"contains": "abc"}).json()
    assert [x["id"] for x in found["data"]] == [exact["id"]]
    by_value = api.get(
        "/v1/radar/value_list_items", {"value_list": emails["id"], "value": "J.DOE@gmail.com"}
    ).json()
    assert [i["value"] for i in by_value["data"]] == ["jdoe@gmail.com"]
    assert api.get(f"/v1/radar/value_lists/{vl['id']}").json()["list_items"]["data"]
    upd = api.post(f"/v1/radar/value_lists/{vl['id']}", {"name": "IPs we block"})
    assert upd.json()["name"] == "IPs we block"
    gone = api.delete(f"/v1/radar/value_list_items/{item.json()['id']}")
    assert gone.json() == {
        "id": item.json()["id"],
        "object": "radar.value_list_item",
        "deleted": True,
    }
    assert api.delete(f"/v1/radar/value_lists/{vl['id']}").json()["deleted"] is True
    assert api.get(f"/v1/radar/value_lists/{vl['id']}").status_code == 404


def test_rules_are_validated_versioned_and_audited(api: Api) -> None:
    api.post("/v1/radar/value_lists", {"alias": "trusted_customers", "name": "Trusted"})
    rules = [
        "Block if :card_country: != :ip_country: and :amount_in_usd: > 500",
        "Review if :card_count_for_ip_address_daily: > 3",
        "Request 3DS if :risk_level: = 'elevated'",
        "Allow if :customer: in @trusted_customers",
    ]
    ids = []
    for text in rules:
        r = api.post("/v1/paywarden/fraud/rules", {"rule": text, "reason": "launch set"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == "active" and body["version"] == 1
        assert body["history"][0]["reason"] == "launch set"
        assert body["history"][0]["actor"].startswith("api_key:")
        ids.append(body["id"])
    assert [r["action"] for r in api.get("/v1/paywarden/fraud/rules").json()["data"]][::-1] == [
        "block",
        "review",
        "request_3ds",
        "allow",
    ]
    # A syntax error points at the mistake and creates nothing.
    bad = api.post(
        "/v1/paywarden/fraud/rules",
        {"rule": "Block if :amount_in_usd > 500", "reason": "typo"},
    )
    assert bad.status_code == 400
    err = bad.json()["error"]
    assert err["code"] == "rule_syntax_error" and err["param"] == "rule"
    assert "^" in err["message"]
    unknown = api.post(
        "/v1/paywarden/fraud/rules", {"rule": "Block if :no_such_thing: > 1", "reason": "x"}
    )
    assert unknown.status_code == 400
    # Rules run before the authorization: the issuer's CVC check is not known yet.
    cvc = api.post(
        "/v1/paywarden/fraud/rules", {"rule": "Block if :cvc_check: = 'fail'", "reason": "x"}
    )
    assert cvc.status_code == 400 and "unknown attribute" in cvc.json()["error"]["message"]
    no_list = api.post(
        "/v1/paywarden/fraud/rules", {"rule": "Block if :email: in @nowhere", "reason": "x"}
    )
    assert no_list.status_code == 400
    assert len(api.get("/v1/paywarden/fraud/rules").json()["data"]) == 4
    # Shadow mode, edits and disabling: each a new version with who/when/why.
    rid = ids[0]
    r = api.post(f"/v1/paywarden/fraud/rules/{rid}", {"mode": "shadow", "reason": "try first"})
    assert r.json()["mode"] == "shadow" and r.json()["version"] == 2
    r = api.post(
        f"/v1/paywarden/fraud/rules/{rid}",
        {"rule": "Block if :amount_in_usd: > 900", "reason": "tuned"},
    )
    assert r.json()["version"] == 3
    assert r.json()["rule"] == "Block if :amount_in_usd: > 900"
    assert api.post(f"/v1/paywarden/fraud/rules/{rid}", {"mode": "shadow"}).status_code == 400
    api.delete(f"/v1/paywarden/fraud/rules/{rid}")
    final = api.get(f"/v1/paywarden/fraud/rules/{rid}").json()
    assert final["enabled"] is False
    assert [h["change"] for h in final["history"]] == ["created", "updated", "updated", "disabled"]
    assert [h["reason"] for h in final["history"]][:3] == ["launch set", "try first", "tuned"]


def test_lists_and_rules_are_per_tenant(api: Api, merchant: Merchant) -> None:
    vl = api.post("/v1/radar/value_lists", {"alias": "vip", "name": "VIP"}).json()
    other = Api(api.client, make_merchant(merchant.gw, "Other").secret_key)
    assert other.get(f"/v1/radar/value_lists/{vl['id']}").status_code == 404
    r = other.post("/v1/radar/value_list_items", {"value_list": vl["id"], "value": "x"})
    assert r.status_code == 404
    # Another tenant's alias is unknown to this tenant's rules.
    r = other.post(
        "/v1/paywarden/fraud/rules", {"rule": "Allow if :customer: in @vip", "reason": "x"}
    )
    assert r.status_code == 400


def test_device_sessions_sign_stable_signals(api: Api, merchant: Merchant) -> None:
    from paywarden.fraud.signals import stable_device_hash

    signals = {
        "screen": "1920x1080",
        "color_depth": 24,
        "timezone": "Europe/Berlin",
        "languages": ["de-DE", "de"],
        "platform": "Win32",
        "hardware_concurrency": 8,
        "device_memory": "0.5",
        "max_touch_points": 0,
        "canvas_hash": "ab" * 32,
        "webgl_renderer": "ANGLE (Intel)",
    }
    headers = {"Authorization": f"Bearer {merchant.publishable_key}"}
    r = api.client.post("/v1/paywarden/device_sessions", json={"signals": signals}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "paywarden.device_session"
    tokens = merchant.gw.device_tokens
    assert tokens is not None
    claims = tokens.verify(body["token"], now=merchant.gw.clock.now())
    assert claims is not None
    assert claims.device_hash == stable_device_hash(signals)
    # Floats, unknown signals and oversized values are refused.
    for bad in (
        {**signals, "device_memory": 0.5},
        {**signals, "battery": "0.9"},
        {**signals, "screen": "x" * 100},
    ):
        r = api.client.post("/v1/paywarden/device_sessions", json={"signals": bad}, headers=headers)
        assert r.status_code == 400, r.text


def test_a_list_a_rule_uses_cannot_be_deleted(api: Api) -> None:
    vl = api.post("/v1/radar/value_lists", {"alias": "risky_bins", "name": "Risky"}).json()
    other = api.post("/v1/radar/value_lists", {"alias": "risky", "name": "Prefix"}).json()
    rule = api.post(
        "/v1/paywarden/fraud/rules",
        {"rule": "Review if :card_bin: in @risky_bins and :email: != '@risky'", "reason": "x"},
    ).json()["id"]
    refused = api.delete(f"/v1/radar/value_lists/{vl['id']}")
    assert refused.status_code == 400, refused.text
    err = refused.json()["error"]
    assert err["code"] == "resource_in_use" and rule in err["message"]
    assert api.get(f"/v1/radar/value_lists/{vl['id']}").status_code == 200
    # A string that only looks like a list reference holds nothing back.
    assert api.delete(f"/v1/radar/value_lists/{other['id']}").json()["deleted"] is True
    # Once the rule is disabled, the list can go.
    assert api.delete(f"/v1/paywarden/fraud/rules/{rule}").status_code == 200
    assert api.delete(f"/v1/radar/value_lists/{vl['id']}").json()["deleted"] is True
    # ...and the rule cannot come back naming a list that is gone.
    back = api.post(f"/v1/paywarden/fraud/rules/{rule}", {"enabled": True, "reason": "again"})
    assert back.status_code == 400 and back.json()["error"]["code"] == "rule_syntax_error"
    assert api.get(f"/v1/paywarden/fraud/rules/{rule}").json()["enabled"] is False
