"""The browser helper in real headless Chromium against the running services:
the page (its own origin) fetches the vault's key through the gateway with a
publishable key, encrypts the card, creates a payment method cross-origin; the
merchant's backend then pays with it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import Page

from tests.conftest import Api, Merchant

pytestmark = pytest.mark.browser

VISA = "4242424242424242"


def test_browser_card_pays_end_to_end(
    browser_page: Page,
    serve_static_page: Callable[[str], str],
    gateway_url: str,
    api: Api,
    merchant: Merchant,
    browser_console: list[str],
) -> None:
    browser_page.goto(serve_static_page("<p>checkout</p>"))
    browser_page.wait_for_function("() => window.PaywardenE2E !== undefined")
    pm = browser_page.evaluate(
        "([url, pk, card]) => PaywardenE2E.createPaymentMethod(url, pk, card,"
        " {billing_details: {name: 'Jenny Rosen'}})",
        [
            gateway_url,
            merchant.publishable_key,
            {"number": VISA, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        ],
    )
    assert pm["object"] == "payment_method"
    assert pm["card"]["last4"] == "4242"
    assert pm["billing_details"]["name"] == "Jenny Rosen"
    r = api.post(
        "/v1/payment_intents",
        {"amount": 1234, "currency": "usd", "payment_method": pm["id"], "confirm": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded"
    # A bad card comes back as Stripe's card error, without the number.
    message = browser_page.evaluate(
        "async ([url, pk]) => { try { await PaywardenE2E.createPaymentMethod(url, pk,"
        " {number: '4242424242424241', exp_month: 12, exp_year: 2034, cvc: '123'});"
        " return 'NO ERROR'; } catch (e) { return e.code + ':' + e.message; } }",
        [gateway_url, merchant.publishable_key],
    )
    assert message.startswith("incorrect_number:")
    assert "424242424242424" not in message
    assert not any(VISA in line for line in browser_console)


def test_browser_device_token_is_signed_and_stable(
    browser_page: Page,
    serve_static_page: Callable[[str], str],
    gateway_url: str,
    merchant: Merchant,
) -> None:
    browser_page.goto(serve_static_page("<p>checkout</p>"))
    browser_page.wait_for_function("() => window.PaywardenE2E !== undefined")
    signals = browser_page.evaluate("() => PaywardenE2E.deviceSignals()")
    assert signals["canvas_hash"] and len(signals["canvas_hash"]) == 64
    assert signals["timezone"] and signals["languages"]
    script = "([url, pk]) => PaywardenE2E.deviceToken(url, pk)"
    first = browser_page.evaluate(script, [gateway_url, merchant.publishable_key])
    second = browser_page.evaluate(script, [gateway_url, merchant.publishable_key])
    tokens = merchant.gw.device_tokens
    assert tokens is not None
    now = merchant.gw.clock.now()
    a, b = tokens.verify(first, now=now), tokens.verify(second, now=now)
    assert a is not None and b is not None
    assert a.device_hash == b.device_hash  # the same browser is the same device
