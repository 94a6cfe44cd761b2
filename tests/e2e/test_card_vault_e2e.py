"""Real card numbers through the running stack (``paywarden run``: gateway, vault
over mutual TLS, sandbox acquirers), driven by the official Stripe SDK; then a
scan of everything the run wrote for those numbers."""

from __future__ import annotations

import re
import ssl
import time
from typing import TYPE_CHECKING, cast

import httpx
import pytest
import stripe

from tests.e2e.conftest import Stack
from tests.e2e.test_stripe_sdk import Receiver, receiver  # noqa: F401 - a fixture

# Stripe's test card numbers (https://docs.stripe.com/testing).
VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
DECLINE = "4000000000000002"
INVALID = "4242424242424241"  # fails the Luhn check
USED_NUMBERS = (VISA, MASTERCARD, AMEX, DECLINE, INVALID)


def _card(number: str, cvc: str = "123") -> stripe.params.PaymentMethodCreateParamsCard:
    return {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": cvc}


def _token_card(number: str) -> stripe.params.TokenCreateParamsCard:
    # The SDK types a token's expiry as strings; form-encoded, "12" and 12 are the same bytes.
    return {"number": number, "exp_month": "12", "exp_year": "2034", "cvc": "123"}


if TYPE_CHECKING:
    from typing_extensions import TypedDict

    class _SealedCard(TypedDict):
        key_id: str
        payload: str

    class _EncryptedCard(stripe.params.PaymentMethodCreateParamsCard):
        """Paywarden's extension of Stripe's card hash: the card sealed to the vault."""

        encrypted: _SealedCard

    # What encrypt_card_params returns. Closed (PEP 728): no other keys, so mypy
    # accepts ``{"type": "card", **params}`` as a PaymentMethodCreateParams.
    class _EncryptedCardParams(TypedDict, closed=True):
        card: _EncryptedCard


def _pay(client: stripe.StripeClient, pm: str) -> stripe.PaymentIntent:
    return client.v1.payment_intents.create(
        params={"amount": 4200, "currency": "eur", "payment_method": pm, "confirm": True}
    )


def test_sdk_raw_card_pays(client: stripe.StripeClient) -> None:
    pm = client.v1.payment_methods.create(params={"type": "card", "card": _card(VISA)})
    assert pm.card is not None
    assert (pm.card.brand, pm.card.last4) == ("visa", "4242")
    assert pm.card.fingerprint
    assert _pay(client, pm.id).status == "succeeded"
    amex = client.v1.payment_methods.create(
        params={"type": "card", "card": _card(AMEX, cvc="1234")}
    )
    assert amex.card is not None
    assert amex.card.brand == "amex"
    assert _pay(client, amex.id).status == "succeeded"


def test_sdk_tokens(client: stripe.StripeClient) -> None:
    tok = client.v1.tokens.create(params={"card": _token_card(MASTERCARD)})
    assert tok.id.startswith("tok_")
    assert tok.card is not None
    assert tok.card.last4 == "4444"
    assert _pay(client, tok.id).status == "succeeded"


def test_sdk_card_errors(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as bad:
        client.v1.payment_methods.create(params={"type": "card", "card": _card(INVALID)})
    assert bad.value.code == "incorrect_number"
    assert INVALID not in str(bad.value)
    pm = client.v1.payment_methods.create(params={"type": "card", "card": _card(DECLINE)})
    with pytest.raises(stripe.CardError) as declined:
        _pay(client, pm.id)
    assert declined.value.code == "card_declined"


def test_sdk_encrypted_card(stack: Stack, client: stripe.StripeClient) -> None:
    from paywarden.clients.e2e import encrypt_card_params, fetch_encryption_key

    key = fetch_encryption_key(stack.gateway_url, stack.publishable_key)
    browser = stack.client(stack.publishable_key)
    # encrypt_card_params is typed dict[str, Any]; its value is {"card": {"encrypted": ...}}.
    params = cast(
        "_EncryptedCardParams",
        encrypt_card_params(key, number=VISA, exp_month=11, exp_year=2033, cvc="321"),
    )
    pm = browser.v1.payment_methods.create(params={"type": "card", **params})
    assert pm.card is not None
    assert pm.card.exp_year == 2033
    assert _pay(client, pm.id).status == "succeeded"


def test_vault_refuses_clients_without_a_certificate(stack: Stack) -> None:
    pki = stack.home / "pki"
    url = f"https://127.0.0.1:{stack.env['PAYWARDEN_VAULT_PORT']}"
    ctx = ssl.create_default_context(cafile=str(pki / "ca-bundle.pem"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/healthz", verify=ctx, timeout=5)
    # The operator identity may not tokenize; the gateway identity may not reveal.
    op = ssl.create_default_context(cafile=str(pki / "ca-bundle.pem"))
    op.load_cert_chain(pki / "operator.pem", pki / "operator.key")
    r = httpx.post(f"{url}/v1/cards", json={"account_id": "acct_x"}, verify=op, timeout=5)
    assert r.status_code == 403
    gw = ssl.create_default_context(cafile=str(pki / "ca-bundle.pem"))
    gw.load_cert_chain(pki / "gateway.pem", pki / "gateway.key")
    r = httpx.post(
        f"{url}/v1/cards/vtok_x/reveal",
        json={"reason": "curiosity, no reason"},
        verify=gw,
        timeout=5,
    )
    assert r.status_code == 403


def test_operator_commands(stack: Stack, client: stripe.StripeClient) -> None:
    import json

    pm = client.v1.payment_methods.create(params={"type": "card", "card": _card(VISA)})
    status = json.loads(stack.cli("vault", "status"))
    before = status["kek"]["current_version"]
    stack.cli("vault", "rotate-kek", "--reason", "e2e drill")
    stack.cli("vault", "rewrap")
    after = json.loads(stack.cli("vault", "status"))
    assert after["kek"]["current_version"] == before + 1
    assert set(after["kek"]["versions"][-1]["protects"]) >= {"cards"}
    stack.cli("vault", "retire", "--min-version", str(before + 1))
    # Old cards still pay: their data keys were rewrapped, not lost.
    assert _pay(client, pm.id).status == "succeeded"
    stack.cli("vault", "rotate-hpke")
    log = stack.cli("vault", "access-log", "--action", "kek_rotate")
    assert "e2e drill" in log


# ======================================================================= leaks
def _patterns(number: str) -> re.Pattern[bytes]:
    """The number in clear, also with spaces or dashes between any digits."""
    return re.compile(b"[ -]?".join(re.escape(d.encode()) for d in number))


def test_zz_no_card_number_anywhere(
    stack: Stack,
    client: stripe.StripeClient,
    receiver: Receiver,  # noqa: F811
) -> None:
    # Every event goes to a webhook receiver: its bodies are scanned too.
    hook = client.v1.webhook_endpoints.create(params={"url": receiver.url, "enabled_events": ["*"]})
    responses: list[bytes] = []
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as raw:
        auth = {"Authorization": f"Bearer {stack.secret_key}"}
        for number in (VISA, MASTERCARD, INVALID):
            r = raw.post(
                "/v1/payment_methods",
                data={
                    "type": "card",
                    "card[number]": number,
                    "card[exp_month]": "12",
                    "card[exp_year]": "2034",
                    "card[cvc]": "123",
                },
                headers=auth,
            )
            responses.append(r.content)
            if r.status_code == 200:
                pi = raw.post(
                    "/v1/payment_intents",
                    data={
                        "amount": "990",
                        "currency": "usd",
                        "confirm": "true",
                        "payment_method": r.json()["id"],
                    },
                    headers=auth,
                )
                responses.append(pi.content)
    receiver.wait_for(lambda d: d.event["type"] == "payment_intent.succeeded", 2)
    client.v1.webhook_endpoints.delete(hook.id)
    for body in [*responses, *(d.body for d in receiver.snapshot())]:
        for number in USED_NUMBERS:
            assert not _patterns(number).search(body), number[:6]
    # Exercise the error paths as well, so this test stands alone.
    spaced = f"{VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]}"
    pm = client.v1.payment_methods.create(params={"type": "card", "card": _card(spaced)})
    assert _pay(client, pm.id).status == "succeeded"
    with pytest.raises(stripe.CardError) as bad:
        client.v1.payment_methods.create(params={"type": "card", "card": _card(INVALID)})
    assert INVALID[:12] not in str(bad.value)
    time.sleep(0.5)
    files = [p for p in stack.home.rglob("*") if p.is_file()]
    files += [p for p in stack.home.parent.glob("*.txt") if p.is_file()]
    assert any(p.name == "vault.db" for p in files), "the vault database was not found"
    assert any(p.name == "gateway.db" for p in files)
    leaks = []
    for path in files:
        data = path.read_bytes()
        for number in USED_NUMBERS:
            if _patterns(number).search(data):
                leaks.append(f"{path.relative_to(stack.home.parent)}: {number[:6]}…")
    assert not leaks, f"card numbers found in clear: {leaks}"
    # The audit logs (gateway and vault) and the log files hold no API key and
    # no webhook signing secret either.
    audited = [p for p in files if p.name == "audit.sqlite" or p.suffix == ".log"]
    assert sum(p.name == "audit.sqlite" for p in audited) == 2, audited
    secrets = [*stack.issued_secrets, str(hook.secret)]
    for path in audited:
        data = path.read_bytes()
        found = [s[:10] for s in secrets if s and s.encode() in data]
        assert not found, f"secrets in {path.name}: {found}"
