"""The sandbox acquirer, served for real by uvicorn and driven over HTTP.

No card number is written here: tests take them from the sandbox's card table.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.acquirer_sandbox import cards
from paywarden.acquirer_sandbox.app import create_app
from tests.support.servers import run_app_in_thread

TOKEN = "sandbox-unit-test-token"
RETURN_URL = "https://shop.example/return?order=42"


def pan_of(ref: str) -> str:
    card = cards.card_for_ref(ref)
    assert card is not None
    return card.pan


def unknown_valid_pan(first: str = "4") -> str:
    partial = first + "9" * 14
    return partial + cards.luhn_check_digit(partial)


# ----------------------------------------------------------------- card table


def test_every_card_number_passes_luhn_and_refs_are_unique() -> None:
    refs = [c.ref for c in cards.TEST_CARDS]
    assert len(refs) == len(set(refs))
    for card in cards.TEST_CARDS:
        assert cards.luhn_valid(card.pan), card.ref
        assert 12 <= len(card.pan) <= 19
        assert cards.detect_brand(card.pan) == card.brand, card.ref


def test_lookups_by_ref_and_pan() -> None:
    visa = cards.card_for_ref("visa")
    assert visa is not None
    assert cards.card_for_pan(visa.pan) is visa
    assert cards.card_for_ref("no_such_card") is None
    declined = cards.card_for_ref("chargeDeclinedInsufficientFunds")
    assert declined is not None
    assert declined.behaviour.kind == "decline"
    assert declined.behaviour.decline_code == "insufficient_funds"
    three_ds = cards.card_for_ref("authenticationRequiredChargeDeclinedInsufficientFunds")
    assert three_ds is not None
    assert three_ds.behaviour.kind == "require_3ds"
    assert three_ds.behaviour.after_authentication == cards.decline("insufficient_funds")
    assert cards.card_for_ref("radarBlock").risk_level == "highest"  # type: ignore[union-attr]


def test_unknown_valid_pan_approves_and_luhn_failure_declines() -> None:
    pan = unknown_valid_pan()
    unknown = cards.card_for_pan(pan)
    assert unknown.ref is None
    assert unknown.behaviour == cards.APPROVE
    assert unknown.brand == "visa"
    visa = pan_of("visa")
    broken = visa[:-1] + str((int(visa[-1]) + 1) % 10)
    bad = cards.card_for_pan(broken)
    assert bad.behaviour == cards.decline("incorrect_number")


@given(st.text(alphabet="0123456789", min_size=11, max_size=18))
def test_luhn_check_digit_makes_a_valid_number(partial: str) -> None:
    pan = partial + cards.luhn_check_digit(partial)
    assert cards.luhn_valid(pan)
    wrong = pan[:-1] + str((int(pan[-1]) + 3) % 10)
    assert not cards.luhn_valid(wrong)


# -------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(name="sandbox_t", db_path=None, token=TOKEN, public_url="")
    with run_app_in_thread(app) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5.0
    ) as client:
        yield client
        client.post("/_control/reset")


def authorize(
    api: httpx.Client,
    card: dict[str, Any] | str,
    *,
    amount: int = 1000,
    currency: str = "usd",
    capture: bool = True,
    key: str | None = None,
    **extra: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "amount": amount,
        "currency": currency,
        "capture": capture,
        "card": {"test_ref": card} if isinstance(card, str) else card,
        "merchant_reference": "pi_test",
        **extra,
    }
    return api.post(
        "/v1/authorizations",
        json=body,
        headers={"Idempotency-Key": key or f"key-{uuid.uuid4()}"},
    )


def post(
    api: httpx.Client, path: str, body: dict[str, Any] | None = None, key: str | None = None
) -> httpx.Response:
    return api.post(
        path, json=body or {}, headers={"Idempotency-Key": key or f"key-{uuid.uuid4()}"}
    )


def stats(api: httpx.Client) -> dict[str, Any]:
    data: dict[str, Any] = api.get("/_control/stats").json()
    return data


# ------------------------------------------------------------- auth, health


def test_healthz_needs_no_token(base_url: str) -> None:
    r = httpx.get(f"{base_url}/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "name": "sandbox_t"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/authorizations"),
        ("GET", "/v1/authorizations?idempotency_key=x"),
        ("GET", "/v1/authorizations/auth_x"),
        ("POST", "/v1/authorizations/auth_x/capture"),
        ("POST", "/v1/authorizations/auth_x/void"),
        ("POST", "/v1/authorizations/auth_x/refunds"),
        ("GET", "/v1/refunds?idempotency_key=x"),
        ("GET", "/v1/authentications/3ds_x"),
        ("GET", "/_control/faults"),
        ("POST", "/_control/faults"),
        ("POST", "/_control/reset"),
        ("GET", "/_control/stats"),
    ],
)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
)
def test_bad_or_missing_token_is_401(
    base_url: str, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Idempotency-Key": "k"}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = httpx.request(method, f"{base_url}{path}", headers=headers, json={})
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


# ------------------------------------------------------------ authorizations


@pytest.mark.parametrize(
    ("capture", "status", "captured"), [(True, "captured", 1000), (False, "authorized", 0)]
)
def test_approved_card(api: httpx.Client, capture: bool, status: str, captured: int) -> None:
    r = authorize(api, "visa", capture=capture, key="approve-" + str(capture) + str(uuid.uuid4()))
    assert r.status_code == 200
    body = r.json()
    assert body["id"].startswith("auth_")
    assert body["object"] == "authorization"
    assert body["status"] == status
    assert body["amount"] == 1000
    assert body["amount_captured"] == captured
    assert body["currency"] == "usd"
    assert body["decline_code"] is None
    assert body["network_status"] == "approved_by_network"
    assert body["authentication"] is None
    assert body["risk_level"] == "normal"
    assert isinstance(body["created"], int)
    assert body["card"]["last4"] == pan_of("visa")[-4:]
    assert r.headers.get("Idempotent-Replayed") is None


@pytest.mark.parametrize(
    ("ref", "code"),
    [
        ("chargeDeclined", "generic_decline"),
        ("chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("chargeDeclinedLostCard", "lost_card"),
        ("chargeDeclinedStolenCard", "stolen_card"),
        ("chargeDeclinedExpiredCard", "expired_card"),
        ("chargeDeclinedIncorrectCvc", "incorrect_cvc"),
        ("chargeDeclinedProcessingError", "processing_error"),
        ("chargeDeclinedVelocityLimitExceeded", "card_velocity_exceeded"),
        ("chargeCustomerFail", "generic_decline"),
        ("chargeDeclinedFraudulent", "fraudulent"),
        ("riskLevelHighest", "fraudulent"),
    ],
)
def test_declining_cards(api: httpx.Client, ref: str, code: str) -> None:
    body = authorize(api, ref).json()
    assert body["status"] == "declined"
    assert body["decline_code"] == code
    assert body["amount_captured"] == 0
    assert body["network_status"] in {"declined_by_network", "not_sent_to_network"}
    assert body["message"]


def test_radar_block_and_risk_levels(api: httpx.Client) -> None:
    blocked = authorize(api, "radarBlock").json()
    assert (blocked["status"], blocked["decline_code"], blocked["risk_level"]) == (
        "declined",
        "fraudulent",
        "highest",
    )
    assert blocked["network_status"] == "not_sent_to_network"
    elevated = authorize(api, "riskLevelElevated").json()
    assert (elevated["status"], elevated["risk_level"]) == ("captured", "elevated")


def test_cvc_check_fails_only_when_a_cvc_is_given(api: httpx.Client) -> None:
    assert authorize(api, "cvcCheckFail").json()["status"] == "captured"
    with_cvc = authorize(api, {"test_ref": "cvcCheckFail", "cvc": "123"}).json()
    assert (with_cvc["status"], with_cvc["decline_code"]) == ("declined", "incorrect_cvc")


def test_expired_card_declines(api: httpx.Client) -> None:
    body = authorize(api, {"test_ref": "visa", "exp_month": 1, "exp_year": 2001}).json()
    assert (body["status"], body["decline_code"]) == ("declined", "expired_card")
    ok = authorize(api, {"test_ref": "visa", "exp_month": 12, "exp_year": 2034}).json()
    assert ok["status"] == "captured"
    assert (ok["card"]["exp_month"], ok["card"]["exp_year"]) == (12, 2034)


def test_card_numbers(api: httpx.Client) -> None:
    known = authorize(api, {"pan": pan_of("chargeDeclinedLostCard")}).json()
    assert (known["status"], known["decline_code"]) == ("declined", "lost_card")
    assert known["card"]["test_ref"] == "chargeDeclinedLostCard"

    spaced = " ".join(re.findall(".{1,4}", pan_of("visa")))
    assert authorize(api, {"pan": spaced}).json()["status"] == "captured"

    unknown = authorize(api, {"pan": unknown_valid_pan()}).json()
    assert unknown["status"] == "captured"
    assert unknown["card"]["test_ref"] is None
    assert unknown["card"]["brand"] == "visa"

    visa = pan_of("visa")
    broken = visa[:-1] + str((int(visa[-1]) + 1) % 10)
    bad = authorize(api, {"pan": broken}).json()
    assert (bad["status"], bad["decline_code"]) == ("declined", "incorrect_number")


def test_the_ledger_never_keeps_a_card_number(tmp_path: Path) -> None:
    db = tmp_path / "sandbox.db"
    numbers = [unknown_valid_pan(), unknown_valid_pan("5"), pan_of("visa"), pan_of("refundFail")]
    app = create_app(name="sandbox_db", db_path=str(db), token=TOKEN, public_url="")
    with (
        run_app_in_thread(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api,
    ):
        for number in numbers:
            body = authorize(api, {"pan": number, "cvc": "123"}).json()
            assert body["status"] == "captured"
            assert body["card"]["last4"] == number[-4:]
            assert number not in str(body)
        threeds = authorize(api, {"pan": pan_of("authenticationRequired")}, return_url=RETURN_URL)
        assert threeds.json()["status"] == "requires_authentication"
    # The server is stopped and the store closed: read everything it wrote.
    cells: list[str] = []
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert {"authorizations", "refunds", "authentications", "idempotency"} <= set(tables)
        for table in tables:
            for row in conn.execute(f"SELECT * FROM {table}"):
                cells.extend(str(v) for v in row)
    conn.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for number in [*numbers, pan_of("authenticationRequired")]:
        assert not any(number in cell for cell in cells)
        assert number.encode() not in raw


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"amount": 10.5}, "amount"),
        ({"amount": 0}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": 100_000_000}, "amount"),
        ({"currency": "usdx"}, "currency"),
        ({"currency": 840}, "currency"),
        ({"capture": "yes"}, "capture"),
        ({"card": {}}, "card"),
        ({"card": {"test_ref": "visa", "pan": "4"}}, "card"),
        ({"card": {"test_ref": "no_such_card"}}, "card.test_ref"),
        ({"card": {"test_ref": "visa", "exp_month": 13}}, "card.exp_month"),
        ({"card": {"test_ref": "visa", "cvc": "12"}}, "card.cvc"),
        ({"card": {"network_token": "ntok_1"}}, "card.network_token"),
        ({"merchant_reference": ""}, "merchant_reference"),
        ({"return_url": "javascript:alert(1)"}, "return_url"),
    ],
)
def test_invalid_requests_are_400_and_not_remembered(
    api: httpx.Client, body: dict[str, Any], param: str
) -> None:
    base: dict[str, Any] = {
        "amount": 1000,
        "currency": "usd",
        "capture": True,
        "card": {"test_ref": "visa"},
        "merchant_reference": "pi_x",
    }
    key = f"bad-{uuid.uuid4()}"
    r = api.post("/v1/authorizations", json={**base, **body}, headers={"Idempotency-Key": key})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    # Nothing was processed under the key: the fixed request then goes through.
    fixed = api.post("/v1/authorizations", json=base, headers={"Idempotency-Key": key})
    assert fixed.status_code == 200


def test_network_token_is_refused(api: httpx.Client) -> None:
    r = authorize(api, {"network_token": "ntok_123"})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "network_token_unsupported"


def test_idempotency_key_is_required(api: httpx.Client) -> None:
    r = api.post(
        "/v1/authorizations",
        json={"amount": 1, "currency": "usd", "capture": True, "card": {"test_ref": "visa"}},
    )
    assert r.status_code == 400
    assert "Idempotency-Key" in r.json()["error"]["message"]


def test_body_must_be_a_json_object(api: httpx.Client) -> None:
    for content in (b"[1]", b"{nope", b'{"amount": NaN}'):
        r = api.post(
            "/v1/authorizations",
            content=content,
            headers={"Idempotency-Key": f"k-{uuid.uuid4()}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400


# --------------------------------------------------------------- idempotency


def test_same_key_same_body_replays_exactly_and_charges_once(api: httpx.Client) -> None:
    before = stats(api)["authorizations"]["total"]
    key = f"replay-{uuid.uuid4()}"
    first = authorize(api, "visa", key=key)
    second = authorize(api, "visa", key=key)
    assert second.status_code == first.status_code == 200
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert stats(api)["authorizations"]["total"] == before + 1


def test_a_declined_answer_replays_too(api: httpx.Client) -> None:
    key = f"replay-decline-{uuid.uuid4()}"
    first = authorize(api, "chargeDeclined", key=key)
    second = authorize(api, "chargeDeclined", key=key)
    assert second.content == first.content
    assert second.json()["status"] == "declined"


def test_same_key_other_body_is_an_idempotency_error(api: httpx.Client) -> None:
    key = f"mismatch-{uuid.uuid4()}"
    assert authorize(api, "visa", key=key, amount=1000).status_code == 200
    r = authorize(api, "visa", key=key, amount=2000)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "idempotency_error"
    # The same key on another endpoint is a different request too.
    auth_id = authorize(api, "visa", capture=False).json()["id"]
    r = post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 10}, key=key)
    assert r.json()["error"]["type"] == "idempotency_error"


# --------------------------------------------------- capture, void, refunds


def test_partial_capture_once(api: httpx.Client) -> None:
    auth_id = authorize(api, "visa", capture=False, amount=5000).json()["id"]
    too_much = post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 5001})
    assert too_much.status_code == 400
    assert too_much.json()["error"]["code"] == "amount_too_large"
    key = f"cap-{uuid.uuid4()}"
    captured = post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 3000}, key=key)
    assert captured.status_code == 200
    assert (captured.json()["status"], captured.json()["amount_captured"]) == ("captured", 3000)
    replay = post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 3000}, key=key)
    assert replay.content == captured.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    again = post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 1000})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "authorization_not_capturable"
    assert api.get(f"/v1/authorizations/{auth_id}").json()["amount_captured"] == 3000


def test_capture_without_amount_takes_everything(api: httpx.Client) -> None:
    auth_id = authorize(api, "visa", capture=False, amount=777).json()["id"]
    body = post(api, f"/v1/authorizations/{auth_id}/capture").json()
    assert body["amount_captured"] == 777


def test_capture_rules(api: httpx.Client) -> None:
    declined = authorize(api, "chargeDeclined", capture=False).json()["id"]
    assert post(api, f"/v1/authorizations/{declined}/capture", {"amount": 1}).status_code == 400
    r = post(api, "/v1/authorizations/auth_missing/capture", {"amount": 1})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"
    auth_id = authorize(api, "visa", capture=False).json()["id"]
    no_key = api.post(f"/v1/authorizations/{auth_id}/capture", json={"amount": 1})
    assert no_key.status_code == 400


def test_void(api: httpx.Client) -> None:
    auth_id = authorize(api, "visa", capture=False).json()["id"]
    voided = post(api, f"/v1/authorizations/{auth_id}/void")
    assert voided.status_code == 200
    assert voided.json()["status"] == "voided"
    assert post(api, f"/v1/authorizations/{auth_id}/void").status_code == 400
    assert post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 1}).status_code == 400
    captured = authorize(api, "visa").json()["id"]
    r = post(api, f"/v1/authorizations/{captured}/void")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "authorization_not_voidable"


def test_refunds_up_to_the_captured_amount(api: httpx.Client) -> None:
    auth_id = authorize(api, "visa", capture=False, amount=5000).json()["id"]
    assert post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 1}).status_code == 400
    post(api, f"/v1/authorizations/{auth_id}/capture", {"amount": 4000})
    key = f"re-{uuid.uuid4()}"
    first = post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 2500}, key=key)
    assert first.status_code == 200
    refund = first.json()
    assert refund["id"].startswith("re_")
    assert (refund["object"], refund["status"], refund["amount"]) == ("refund", "succeeded", 2500)
    assert (refund["authorization"], refund["currency"], refund["failure_reason"]) == (
        auth_id,
        "usd",
        None,
    )
    replay = post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 2500}, key=key)
    assert replay.content == first.content
    over = post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 1501})
    assert over.status_code == 400
    assert over.json()["error"]["code"] == "amount_too_large"
    rest = post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 1500})
    assert rest.json()["status"] == "succeeded"
    assert post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 1}).status_code == 400
    assert api.get(f"/v1/authorizations/{auth_id}").json()["amount_refunded"] == 4000


def test_refund_fail_card(api: httpx.Client) -> None:
    auth_id = authorize(api, "refundFail").json()["id"]
    refund = post(api, f"/v1/authorizations/{auth_id}/refunds", {"amount": 400}).json()
    assert (refund["status"], refund["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert api.get(f"/v1/authorizations/{auth_id}").json()["amount_refunded"] == 0


# ------------------------------------------------------------------ lookups


def test_lookups_by_idempotency_key(api: httpx.Client) -> None:
    key = f"lookup-{uuid.uuid4()}"
    auth = authorize(api, "visa", capture=False, key=key).json()
    found = api.get("/v1/authorizations", params={"idempotency_key": key})
    assert found.status_code == 200
    assert found.json() == auth
    post(api, f"/v1/authorizations/{auth['id']}/capture", {"amount": 600})
    # The record as it is now.
    assert api.get("/v1/authorizations", params={"idempotency_key": key}).json()["status"] == (
        "captured"
    )
    rkey = f"lookup-re-{uuid.uuid4()}"
    refund = post(api, f"/v1/authorizations/{auth['id']}/refunds", {"amount": 100}, key=rkey).json()
    assert api.get("/v1/refunds", params={"idempotency_key": rkey}).json() == refund
    assert api.get(f"/v1/authorizations/{auth['id']}").json()["id"] == auth["id"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/authorizations?idempotency_key=never-used",
        "/v1/refunds?idempotency_key=never-used",
        "/v1/authorizations/auth_nope",
        "/v1/authentications/3ds_nope",
    ],
)
def test_lookups_of_unknown_records_are_404(api: httpx.Client, path: str) -> None:
    r = api.get(path)
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"


def test_lookup_needs_a_key(api: httpx.Client) -> None:
    assert api.get("/v1/authorizations").status_code == 400
    assert api.get("/v1/refunds").status_code == 400


# ---------------------------------------------------------------- 3-D Secure


def forms_of(page: str) -> dict[str, str]:
    """result value -> form action, from the ACS page."""
    forms = re.findall(
        r'<form method="post" action="([^"]+)"><input type="hidden" name="result" '
        r'value="(\w+)"><button type="submit">([^<]+)</button>',
        page,
    )
    return {value: action for action, value, _label in forms}


def complete(page_url: str, result: str) -> httpx.Response:
    page = httpx.get(page_url)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    action = urljoin(page_url, forms_of(page.text)[result])
    return httpx.post(action, data={"result": result})


def test_3ds_full_flow_through_the_page(api: httpx.Client, base_url: str) -> None:
    first = authorize(api, "threeDSecure2Required", amount=2599, return_url=RETURN_URL).json()
    assert first["status"] == "requires_authentication"
    assert first["amount_captured"] == 0
    session = first["authentication"]
    assert session["id"].startswith("3ds_")
    assert session["url"] == f"{base_url}/3ds/{session['id']}"

    page = httpx.get(session["url"])
    assert "Complete authentication" in page.text
    assert "Fail authentication" in page.text
    assert "25.99 USD" in page.text
    assert set(forms_of(page.text)) == {"authenticated", "failed"}
    status = api.get(f"/v1/authentications/{session['id']}").json()
    assert (status["id"], status["status"]) == (session["id"], "pending")

    done = complete(session["url"], "authenticated")
    assert done.status_code == 303
    location = urlsplit(done.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("https", "shop.example", "/return")
    assert parse_qs(location.query) == {"order": ["42"], "authentication_id": [session["id"]]}
    assert api.get(f"/v1/authentications/{session['id']}").json()["status"] == "authenticated"

    # Completing twice is refused; the page says so.
    again = httpx.post(f"{session['url']}/complete", data={"result": "failed"})
    assert again.status_code == 409
    assert "already" in httpx.get(session["url"]).text
    assert api.get(f"/v1/authentications/{session['id']}").json()["status"] == "authenticated"

    paid = authorize(
        api, "threeDSecure2Required", amount=2599, authentication_id=session["id"]
    ).json()
    assert (paid["status"], paid["amount_captured"]) == ("captured", 2599)
    assert paid["authentication"]["id"] == session["id"]

    # One authentication vouches for one authorization.
    reused = authorize(api, "threeDSecure2Required", amount=2599, authentication_id=session["id"])
    assert (reused.json()["status"], reused.json()["decline_code"]) == (
        "declined",
        "authentication_required",
    )


def test_3ds_failed_authentication_declines(api: httpx.Client) -> None:
    session = authorize(api, "authenticationRequired", return_url=RETURN_URL).json()[
        "authentication"
    ]
    done = complete(session["url"], "failed")
    assert done.status_code == 303
    assert api.get(f"/v1/authentications/{session['id']}").json()["status"] == "failed"
    body = authorize(api, "authenticationRequired", authentication_id=session["id"]).json()
    assert (body["status"], body["decline_code"]) == ("declined", "authentication_required")


def test_3ds_without_return_url_ends_on_a_page(api: httpx.Client) -> None:
    session = authorize(api, "threeDSecureRequired").json()["authentication"]
    done = complete(session["url"], "authenticated")
    assert done.status_code == 200
    assert "completed" in done.text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"amount": 1001}, "amount"),
        ({"currency": "eur"}, "currency"),
        ({"card": {"test_ref": "authenticationRequired"}}, "card"),
    ],
)
def test_3ds_session_must_match_the_payment(
    api: httpx.Client, change: dict[str, Any], reason: str
) -> None:
    session = authorize(api, "threeDSecure2Required").json()["authentication"]
    complete(session["url"], "authenticated")
    kwargs: dict[str, Any] = {"amount": 1000, "currency": "usd", **change}
    card = kwargs.pop("card", "threeDSecure2Required")
    body = authorize(api, card, authentication_id=session["id"], **kwargs).json()
    assert body["decline_code"] == "authentication_required", reason


def test_3ds_pending_or_unknown_session_declines(api: httpx.Client) -> None:
    session = authorize(api, "threeDSecure2Required").json()["authentication"]
    pending = authorize(api, "threeDSecure2Required", authentication_id=session["id"]).json()
    assert pending["decline_code"] == "authentication_required"
    unknown = authorize(api, "threeDSecure2Required", authentication_id="3ds_unknown").json()
    assert unknown["decline_code"] == "authentication_required"


@pytest.mark.parametrize(
    ("ref", "status", "code"),
    [
        ("authenticationRequiredChargeDeclinedInsufficientFunds", "declined", "insufficient_funds"),
        ("threeDSecureRequiredChargeDeclined", "declined", "generic_decline"),
        ("authenticationRequiredOnSetup", "captured", None),
    ],
)
def test_3ds_outcome_after_authentication(
    api: httpx.Client, ref: str, status: str, code: str | None
) -> None:
    session = authorize(api, ref).json()["authentication"]
    complete(session["url"], "authenticated")
    body = authorize(api, ref, authentication_id=session["id"]).json()
    assert (body["status"], body["decline_code"]) == (status, code)


def test_3ds_page_errors(base_url: str, api: httpx.Client) -> None:
    assert httpx.get(f"{base_url}/3ds/3ds_nope").status_code == 404
    assert (
        httpx.post(f"{base_url}/3ds/3ds_nope/complete", data={"result": "failed"}).status_code
        == 404
    )
    session = authorize(api, "threeDSecure2Required").json()["authentication"]
    bad = httpx.post(f"{session['url']}/complete", data={"result": "maybe"})
    assert bad.status_code == 400
    assert api.get(f"/v1/authentications/{session['id']}").json()["status"] == "pending"


def test_public_url_prefixes_the_3ds_link() -> None:
    app = create_app(
        name="sandbox_pub", db_path=None, token=TOKEN, public_url="https://acs.example/sandbox/"
    )
    with (
        run_app_in_thread(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as api,
    ):
        session = authorize(api, "threeDSecure2Required").json()["authentication"]
        assert session["url"] == f"https://acs.example/sandbox/3ds/{session['id']}"


# ------------------------------------------------------------ control plane


def test_fault_control(api: httpx.Client) -> None:
    assert api.get("/_control/faults").json() == {
        "mode": "none",
        "latency_ms": 0,
        "count": None,
        "operations": ["authorize", "capture", "void", "refund"],
    }
    set_ = api.post(
        "/_control/faults", json={"mode": "timeout", "count": 2, "operations": ["void"]}
    )
    assert set_.json() == {
        "mode": "timeout",
        "latency_ms": 30000,
        "count": 2,
        "operations": ["void"],
    }
    assert api.get("/_control/faults").json() == set_.json()
    for bad in (
        {"mode": "explode"},
        {"mode": "latency", "latency_ms": -1},
        {"mode": "latency", "count": -1},
        {"mode": "latency", "operations": ["lookup"]},
        {"mode": "latency", "operations": []},
    ):
        r = api.post("/_control/faults", json=bad)
        assert r.status_code == 400, bad
    assert api.post("/_control/reset").json()["mode"] == "none"


def test_injected_503_and_500_do_not_process(api: httpx.Client) -> None:
    before = stats(api)["authorizations"]["total"]
    api.post("/_control/faults", json={"mode": "error_503", "count": 1})
    key = f"fault-{uuid.uuid4()}"
    r = authorize(api, "visa", key=key)
    assert r.status_code == 503
    api.post("/_control/faults", json={"mode": "error_500", "count": 1})
    assert authorize(api, "visa", key=key).status_code == 500
    assert api.get("/v1/authorizations", params={"idempotency_key": key}).status_code == 404
    assert stats(api)["authorizations"]["total"] == before
    # The faults were used up; the same key now processes once.
    assert authorize(api, "visa", key=key).status_code == 200
    assert stats(api)["authorizations"]["total"] == before + 1


def test_stats_count_by_status(api: httpx.Client) -> None:
    before = stats(api)
    authorize(api, "visa")
    authorize(api, "chargeDeclined")
    after = stats(api)
    by_before = before["authorizations"]["by_status"]
    by_after = after["authorizations"]["by_status"]
    assert by_after["captured"] == by_before.get("captured", 0) + 1
    assert by_after["declined"] == by_before.get("declined", 0) + 1
    assert after["authorizations"]["total"] == before["authorizations"]["total"] + 2


# --------------------------------------------------------------------- CLI


def test_module_entry_point_serves(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = Path(cards.__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "paywarden.acquirer_sandbox",
            "--name",
            "sandbox_cli",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--db",
            str(tmp_path / "cli.db"),
            "--token-file",
            str(token_file),
            "--log-level",
            "warning",
        ],
        env={"PYTHONPATH": str(src), "PATH": ""},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        # A fresh interpreter importing the app: slow on a loaded machine.
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.json() == {"status": "ok", "name": "sandbox_cli"}
        headers = {"Authorization": f"Bearer {TOKEN}", "Idempotency-Key": "cli-1"}
        body = {
            "amount": 100,
            "currency": "eur",
            "capture": False,
            "card": {"test_ref": "threeDSecure2Required"},
            "merchant_reference": "pi_cli",
        }
        auth = httpx.post(
            f"http://127.0.0.1:{port}/v1/authorizations", json=body, headers=headers, timeout=30
        )
        assert auth.json()["authentication"]["url"].startswith(f"http://127.0.0.1:{port}/3ds/")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()
