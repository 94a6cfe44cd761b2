"""Raw and end-to-end encrypted cards through the gateway and the real vault
(mutual TLS), paying through the real sandbox acquirers."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from paywarden.payments.models import CardToken, PaymentMethod
from paywarden.vault.models import VaultCard, VaultCvc
from tests.conftest import Acquirers, Api, Merchant, VaultServer, make_merchant, serve_vault

VISA = "4242424242424242"
DECLINE = "4000000000000002"
THREE_DS = "4000002760003184"


def card(number: str = VISA, **kw: object) -> dict[str, Any]:
    return {
        "type": "card",
        "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123", **kw},
    }


def create_pm(api: Api, number: str = VISA, **kw: object) -> dict[str, Any]:
    r = api.post("/v1/payment_methods", card(number, **kw))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def pay(api: Api, pm_id: str, **kw: object) -> dict[str, Any]:
    r = api.post(
        "/v1/payment_intents",
        {"amount": 1500, "currency": "usd", "payment_method": pm_id, "confirm": True, **kw},
    )
    body: dict[str, Any] = r.json()
    return body | {"_status": r.status_code}


def test_raw_card_pays_end_to_end(api: Api, merchant: Merchant) -> None:
    pm = create_pm(api)
    assert pm["id"].startswith("pm_")
    c = pm["card"]
    assert (c["brand"], c["last4"], c["exp_month"], c["exp_year"]) == ("visa", "4242", 12, 2034)
    assert c["fingerprint"] and len(c["fingerprint"]) == 16
    pi = pay(api, pm["id"])
    assert pi["_status"] == 200, pi
    assert pi["status"] == "succeeded"
    with merchant.gw.db.read() as s:
        row = s.scalar(select(PaymentMethod).where(PaymentMethod.id == pm["id"]))
        assert row is not None
        assert row.card_ref.startswith("vault:vtok_")
        assert row.bin == "424242"


def test_gateway_database_never_holds_the_number(api: Api, merchant: Merchant) -> None:
    for number in (VISA, "5555555555554444", "4242 4242 4242 4242"):
        pay(api, create_pm(api, number)["id"])
    api.post("/v1/tokens", {"card": card("378282246310005", cvc="1234")["card"]})
    api.post("/v1/payment_methods", card("4242424242424241"))  # refused: Luhn
    gw = merchant.gw
    if not gw.db.is_sqlite:
        pytest.skip("the file scan needs SQLite")
    path = Path(gw.db.url.removeprefix("sqlite:///"))
    files = list(path.parent.glob(path.name + "*"))
    assert files
    for f in files:
        data = f.read_bytes()
        for number in (VISA, "5555555555554444", "378282246310005", "4242424242424241"):
            assert number.encode() not in data, f


def test_fingerprint_is_stable_per_merchant_and_differs_across(
    api: Api, merchant: Merchant, client: object
) -> None:
    a = create_pm(api)["card"]["fingerprint"]
    assert create_pm(api)["card"]["fingerprint"] == a
    assert create_pm(api, "5555555555554444")["card"]["fingerprint"] != a
    other = make_merchant(merchant.gw, "Other")
    b = create_pm(Api(api.client, other.secret_key))["card"]["fingerprint"]
    assert b != a


@pytest.mark.parametrize(
    ("fields", "code", "param"),
    [
        ({"number": "4242424242424241"}, "incorrect_number", "card[number]"),
        ({"number": "42424242"}, "incorrect_number", "card[number]"),
        ({"number": "4242abcd42424242"}, "invalid_number", "card[number]"),
        ({"exp_month": 13}, "invalid_expiry_month", "card[exp_month]"),
        ({"exp_year": 2001}, "invalid_expiry_year", "card[exp_year]"),
        ({"cvc": "12"}, "invalid_cvc", "card[cvc]"),
    ],
)
def test_bad_card_data_gets_stripe_card_errors(
    api: Api, merchant: Merchant, fields: dict[str, object], code: str, param: str
) -> None:
    data = card()
    data["card"].update(fields)
    r = api.post("/v1/payment_methods", data)
    assert r.status_code == 402, r.text
    err = r.json()["error"]
    assert err["type"] == "card_error"
    assert err["code"] in (code, "invalid_number", "incorrect_number")
    assert err["param"] == param
    assert "4242" not in r.text.replace("4242424242424242", "")  # nothing echoed
    with merchant.gw.db.read() as s:
        assert s.scalar(select(func.count()).select_from(PaymentMethod)) == 0


def test_declines_and_3ds_through_the_vault(api: Api) -> None:
    declined = pay(api, create_pm(api, DECLINE)["id"])
    assert declined["_status"] == 402
    assert declined["error"]["decline_code"] == "generic_decline"
    action = pay(api, create_pm(api, THREE_DS)["id"], return_url="https://m.example/r")
    assert action["status"] == "requires_action"


def test_cvc_is_dropped_after_authorization(api: Api, vault: VaultServer) -> None:
    pm = create_pm(api)
    with vault.service.db.read() as s:
        token = s.scalar(select(VaultCard.token).order_by(VaultCard.pk.desc()))
        assert s.get(VaultCvc, token) is not None
    assert pay(api, pm["id"])["status"] == "succeeded"
    with vault.service.db.read() as s:
        assert s.get(VaultCvc, token) is None


def test_tokens_are_single_use(api: Api) -> None:
    r = api.post("/v1/tokens", {"card": card()["card"]})
    assert r.status_code == 200, r.text
    tok = r.json()
    assert tok["id"].startswith("tok_")
    assert tok["object"] == "token"
    assert tok["card"]["last4"] == "4242"
    assert tok["card"]["brand"] == "Visa"
    assert tok["used"] is False
    pm = api.post("/v1/payment_methods", {"type": "card", "card": {"token": tok["id"]}})
    assert pm.status_code == 200, pm.text
    assert pm.json()["card"]["fingerprint"] == tok["card"]["fingerprint"]
    again = api.post("/v1/payment_methods", {"type": "card", "card": {"token": tok["id"]}})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "token_already_used"
    assert api.get(f"/v1/tokens/{tok['id']}").json()["used"] is True
    assert pay(api, pm.json()["id"])["status"] == "succeeded"


def test_token_as_payment_method_on_an_intent(api: Api) -> None:
    tok = api.post("/v1/tokens", {"card": card()["card"]}).json()
    assert pay(api, tok["id"])["status"] == "succeeded"


def test_publishable_key_may_create_cards_but_not_read_tokens(api: Api, merchant: Merchant) -> None:
    r = api.post("/v1/payment_methods", card(), key=merchant.publishable_key)
    assert r.status_code == 200, r.text
    tok = api.post("/v1/tokens", {"card": card()["card"]}, key=merchant.publishable_key)
    assert tok.status_code == 200, tok.text
    assert (
        api.get(f"/v1/tokens/{tok.json()['id']}", key=merchant.publishable_key).status_code == 403
    )


def test_detach_crypto_shreds_the_card(api: Api, vault: VaultServer) -> None:
    cus = api.post("/v1/customers", {"email": "a@example.com"}).json()
    pm = create_pm(api)
    assert api.post(f"/v1/payment_methods/{pm['id']}/attach", {"customer": cus["id"]}).is_success
    with vault.service.db.read() as s:
        row = s.scalar(select(VaultCard).order_by(VaultCard.pk.desc()))
        token, ciphertext = row.token, row.ciphertext
    r = api.post(f"/v1/payment_methods/{pm['id']}/detach")
    assert r.status_code == 200, r.text
    with vault.service.db.read() as s:
        row = s.scalar(select(VaultCard).where(VaultCard.token == token))
        assert row.shredded_at is not None
        assert row.wrapped_key is None
        assert row.ciphertext == ciphertext  # still there, never openable again
    # No key exists any more that opens it; the gateway cannot pay with it.
    failed = pay(api, pm["id"])
    assert failed["_status"] in (400, 402)


def test_customer_erasure_shreds_their_cards(api: Api, vault: VaultServer) -> None:
    cus = api.post("/v1/customers", {"email": "b@example.com"}).json()
    pms = [create_pm(api) for _ in range(2)]
    for pm in pms:
        api.post(f"/v1/payment_methods/{pm['id']}/attach", {"customer": cus["id"]})
    with vault.service.db.read() as s:
        tokens = list(s.scalars(select(VaultCard.token).order_by(VaultCard.pk.desc()).limit(2)))
    assert api.delete(f"/v1/customers/{cus['id']}").status_code == 200
    with vault.service.db.read() as s:
        for t in tokens:
            assert s.scalar(select(VaultCard.shredded_at).where(VaultCard.token == t))


def test_idempotent_card_creation(api: Api) -> None:
    key = uuid.uuid4().hex
    a = api.post("/v1/payment_methods", card(), idem=key)
    b = api.post("/v1/payment_methods", card(), idem=key)
    assert a.json()["id"] == b.json()["id"]
    assert b.headers.get("Idempotent-Replayed") == "true"
    c = api.post("/v1/payment_methods", card("5555555555554444"), idem=key)
    assert c.status_code == 400
    assert c.json()["error"]["type"] == "idempotency_error"


def test_encrypted_card_pays(api: Api, merchant: Merchant) -> None:
    from paywarden.clients.e2e import encrypt_card, fetch_encryption_key

    key = fetch_encryption_key(str(api.client.base_url), merchant.publishable_key)
    fields = encrypt_card(key, number=VISA, exp_month=12, exp_year=2034, cvc="123")
    r = api.client.post(
        "/v1/payment_methods",
        data={"type": "card", **fields},
        headers={"Authorization": f"Bearer {merchant.publishable_key}"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["card"]["last4"] == "4242"
    assert pay(api, r.json()["id"])["status"] == "succeeded"
    # The same ciphertext under another key id is refused.
    bad = dict(fields)
    bad["card[encrypted][key_id]"] = "ek_doesnotexist"
    r2 = api.client.post(
        "/v1/payment_methods",
        data={"type": "card", **bad},
        headers={"Authorization": f"Bearer {merchant.publishable_key}"},
    )
    assert r2.status_code == 400
    assert r2.json()["error"]["code"] == "encrypted_card_invalid"
    # A payload works once, and only for the merchant it was sealed for.
    again = api.client.post(
        "/v1/payment_methods",
        data={"type": "card", **fields},
        headers={"Authorization": f"Bearer {merchant.publishable_key}"},
    )
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "encrypted_card_reused"
    other = make_merchant(merchant.gw, "Thief")
    fresh = encrypt_card(key, number=VISA, exp_month=12, exp_year=2034, cvc="123")
    stolen = api.client.post(
        "/v1/payment_methods",
        data={"type": "card", **fresh},
        headers={"Authorization": f"Bearer {other.publishable_key}"},
    )
    assert stolen.status_code == 400
    assert stolen.json()["error"]["code"] == "encrypted_card_invalid"


def test_raw_card_fields_elsewhere_are_still_refused(api: Api) -> None:
    r = api.post("/v1/customers", {"metadata": {"x": "1"}, "card": {"number": VISA}})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "raw_card_data_not_enabled"


def test_vault_down_fails_cleanly_and_recovers(
    api: Api, merchant: Merchant, tmp_path: Path, clean_acquirers: Acquirers
) -> None:
    """A dedicated vault this test stops and starts again on the same port and
    data; the gateway points at it meanwhile."""
    from paywarden.gateway.container import build_vault_client

    gw = merchant.gw
    home = tmp_path / "v2"
    old = gw.vault

    def point_at(url: str, pki: Path) -> None:
        # Close our keep-alive connections before a server goes away.
        if gw.vault is not None and gw.vault is not old:
            gw.vault.close()
        settings = gw.settings.model_copy(update={"vault_url": url, "pki_dir": pki})
        gw.vault = build_vault_client(settings)
        for conn in gw.router.connectors:
            conn._vault = gw.vault  # type: ignore[attr-defined]

    try:
        with serve_vault(home, clean_acquirers.urls) as v2:
            point_at(v2.url, v2.pki_dir)
            pm = create_pm(api)
            port = int(v2.url.rsplit(":", 1)[1])
            point_at(v2.url, v2.pki_dir)
        # The vault is down: nothing is created, payments fail cleanly.
        r = api.post("/v1/payment_methods", card())
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "vault_unavailable"
        assert "Traceback" not in r.text
        with gw.db.read() as s:
            assert s.scalar(select(func.count()).select_from(PaymentMethod)) == 1
            assert s.scalar(select(func.count()).select_from(CardToken)) == 0
        failed = pay(api, pm["id"])
        assert failed["_status"] == 402
        assert failed["error"]["code"] == "processing_error"
        pi_id = failed["error"]["payment_intent"]["id"]
        assert api.get(f"/v1/payment_intents/{pi_id}").json()["status"] == "requires_payment_method"
        # The vault comes back on the same address with the same data.
        with serve_vault(home, clean_acquirers.urls, port=port) as v3:
            r = api.post(f"/v1/payment_intents/{pi_id}/confirm")
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "succeeded"
            assert create_pm(api)["card"]["last4"] == "4242"
            point_at(v3.url, v3.pki_dir)
    finally:
        if gw.vault is not None and gw.vault is not old:
            gw.vault.close()
        gw.vault = old
        for conn in gw.router.connectors:
            conn._vault = old  # type: ignore[attr-defined]


def test_rotation_and_rewrap_during_live_traffic_fail_no_payment(
    api: Api, merchant: Merchant, vault: VaultServer
) -> None:
    import threading

    import httpx

    from tests.conftest import flatten

    existing = [create_pm(api)["id"] for _ in range(3)]
    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        headers = {"Authorization": f"Bearer {merchant.secret_key}"}
        with httpx.Client(base_url=str(api.client.base_url), timeout=30) as c:
            i = 0
            while not stop.is_set() or i < 6:
                pm = c.post("/v1/payment_methods", data=flatten(card()), headers=headers)
                if pm.status_code != 200:
                    results.append((pm.status_code, pm.text))
                    continue
                for pm_id in (pm.json()["id"], existing[i % len(existing)]):
                    r = c.post(
                        "/v1/payment_intents",
                        data=flatten(
                            {
                                "amount": 700,
                                "currency": "usd",
                                "payment_method": pm_id,
                                "confirm": True,
                            }
                        ),
                        headers=headers,
                    )
                    results.append((r.status_code, r.json().get("status", r.text)))
                i += 1

    t = threading.Thread(target=traffic)
    t.start()
    try:
        svc = vault.service
        version = svc.rotate_kek(actor="operator")
        while svc.rewrap_batch(actor="operator", limit=2)["remaining"]:
            pass
        svc.rotate_hpke(actor="operator")
        version = svc.rotate_kek(actor="operator")
        while svc.rewrap_batch(actor="operator", limit=5)["remaining"]:
            pass
    finally:
        stop.set()
        t.join(120)
    assert len(results) >= 12
    assert all(code == 200 and status == "succeeded" for code, status in results), results
    assert svc.records_below(version) == 0


def test_gateway_serves_the_browser_helper(api: Api) -> None:
    from paywarden.clients import browser_helper_source

    r = api.client.get("/js/paywarden-e2e.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.text == browser_helper_source()
    # Checkout pages on the merchant's origin call the API cross-origin.
    pre = api.client.options(
        "/v1/payment_methods",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in pre.headers


def test_token_card_holder_fields_become_billing_details(api: Api) -> None:
    holder = {
        "name": "Jenny Rosen",
        "address_line1": "1 Main St",
        "address_zip": "94111",
        "address_country": "US",
    }
    tok = api.post("/v1/tokens", {"card": {**card()["card"], **holder}})
    assert tok.status_code == 200, tok.text
    body = tok.json()["card"]
    assert body["name"] == "Jenny Rosen" and body["address_zip"] == "94111"
    assert body["address_zip_check"] == "unchecked"
    pm = api.post("/v1/payment_methods", {"type": "card", "card": {"token": tok.json()["id"]}})
    bd = pm.json()["billing_details"]
    assert bd["name"] == "Jenny Rosen"
    assert bd["address"]["line1"] == "1 Main St"
    assert bd["address"]["postal_code"] == "94111"
    bad = api.post("/v1/tokens", {"card": {**card()["card"], "nickname": "x"}})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "parameter_unknown"


@pytest.mark.parametrize("faults", [1, 2])
def test_unknown_outcomes_through_the_vault_are_retried_or_reconciled(
    api: Api, merchant: Merchant, clean_acquirers: Acquirers, faults: int
) -> None:
    """The acquirer acts but its answer is lost on the vault's forward: the
    gateway retries with the same idempotency key (1 fault), or leaves the
    payment processing and reconciles it directly with the acquirer (2 faults).
    Either way exactly one authorization exists."""
    import time

    from paywarden.acquirers.base import AcquirerError
    from paywarden.payments.models import AcquirerAttempt, Charge
    from paywarden.payments.reconcile import Reconciler

    gw = merchant.gw
    pm = create_pm(api)
    # The vault's forward times out after 1 s; the answer is held far longer
    # (until the vault hangs up), so a slow vault cannot still receive it.
    clean_acquirers.faults(
        "sandbox_a", mode="lost_response", latency_ms=30_000, count=faults, operations=["authorize"]
    )
    pi = api.post(
        "/v1/payment_intents", {"amount": 1300, "currency": "usd", "payment_method": pm["id"]}
    ).json()
    r = api.post(f"/v1/payment_intents/{pi['id']}/confirm")
    assert r.status_code == 200, r.text
    if faults == 2:
        assert r.json()["status"] == "processing"
        clean_acquirers.reset()
        # Until the sandbox has committed the authorization it was holding.
        with gw.db.read() as s:
            key = s.scalars(
                select(AcquirerAttempt.idempotency_key).where(
                    AcquirerAttempt.payment_intent_id == pi["id"]
                )
            ).one()
        conn = gw.router.get("sandbox_a")
        deadline = time.monotonic() + 30
        while True:
            try:
                conn.lookup_authorization(key)
                break
            except AcquirerError:
                assert time.monotonic() < deadline, "the acquirer never processed it"
                time.sleep(0.05)
        assert Reconciler(gw.payments, interval=0).run_once() == 1
    final = api.get(f"/v1/payment_intents/{pi['id']}").json()
    assert final["status"] == "succeeded"
    with gw.db.read() as s:
        atts = list(
            s.scalars(select(AcquirerAttempt).where(AcquirerAttempt.payment_intent_id == pi["id"]))
        )
        charges = s.scalar(
            select(func.count()).select_from(Charge).where(Charge.payment_intent_id == pi["id"])
        )
    assert [a.acquirer for a in atts] == ["sandbox_a"]
    assert charges == 1
    res = gw.router.get("sandbox_a").lookup_authorization(atts[0].idempotency_key)
    assert res.status == "captured"
