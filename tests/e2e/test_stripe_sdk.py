"""The official ``stripe`` SDK against the real ``paywarden run`` stack.

Every call goes over HTTP to separate processes (gateway, two sandbox
acquirers); nothing here imports the gateway. See ``conftest.py`` for the stack.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest
import stripe

from tests.e2e.conftest import LEAK_TEST_NAME, Stack, run_stack

pytestmark = pytest.mark.e2e

MERCHANT_RETURN_URL = "https://shop.example.invalid/checkout/return?order=42"


def _uid() -> str:
    return uuid.uuid4().hex[:12]


if TYPE_CHECKING:
    from typing_extensions import TypedDict, Unpack

    # The PaymentIntentCreateParams fields the tests vary. Closed (PEP 728): no
    # other keys, so mypy accepts ``{..., **extra}`` as a PaymentIntentCreateParams.
    class _PayExtra(TypedDict, total=False, closed=True):
        capture_method: Literal["automatic", "automatic_async", "manual"]
        description: str
        payment_method: str
        return_url: str


def _pay(
    client: stripe.StripeClient, amount: int = 1000, **extra: Unpack[_PayExtra]
) -> stripe.PaymentIntent:
    params: stripe.params.PaymentIntentCreateParams = {
        "amount": amount,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
        **extra,
    }
    return client.v1.payment_intents.create(params=params)


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# ================================================================== customers
def test_customer_crud(client: stripe.StripeClient) -> None:
    email = f"crud-{_uid()}@example.com"
    created = client.v1.customers.create(
        params={"email": email, "name": "Ada", "metadata": {"order": "7"}}
    )
    assert created.id.startswith("cus_")
    assert created.object == "customer"
    assert created.metadata is not None
    assert (created.email, created.name, created.metadata["order"]) == (email, "Ada", "7")

    got = client.v1.customers.retrieve(created.id)
    assert (got.id, got.email) == (created.id, email)

    updated = client.v1.customers.update(
        created.id, params={"name": "Ada Lovelace", "metadata": {"tier": "gold", "order": ""}}
    )
    assert updated.name == "Ada Lovelace"
    assert updated.metadata is not None
    assert updated.metadata.to_dict() == {"tier": "gold"}
    assert client.v1.customers.retrieve(created.id).name == "Ada Lovelace"

    listed = client.v1.customers.list(params={"email": email})
    assert [c.id for c in listed.data] == [created.id]

    deleted = client.v1.customers.delete(created.id)
    assert deleted.id == created.id
    assert deleted.deleted is True
    assert client.v1.customers.list(params={"email": email}).data == []
    # Stripe still answers a retrieve of a deleted customer, with deleted=true.
    assert client.v1.customers.retrieve(created.id).to_dict().get("deleted") is True


def test_customer_auto_pagination(client: stripe.StripeClient) -> None:
    email = f"page-{_uid()}@example.com"
    ids = [client.v1.customers.create(params={"email": email}).id for _ in range(25)]
    newest_first = list(reversed(ids))

    page = client.v1.customers.list(params={"limit": 3, "email": email})
    assert len(page.data) == 3
    assert page.has_more is True
    seen = [c.id for c in page.auto_paging_iter()]
    assert seen == newest_first  # every customer once, newest first

    # Backwards from the oldest: the SDK walks previous pages (ending_before).
    back = client.v1.customers.list(
        params={"limit": 3, "email": email, "ending_before": newest_first[-1]}
    )
    assert [c.id for c in back.data] == newest_first[-4:-1]
    assert [c.id for c in back.auto_paging_iter()] == ids[1:]

    # starting_after in the middle: the rest, in order.
    rest = client.v1.customers.list(
        params={"limit": 4, "email": email, "starting_after": newest_first[9]}
    )
    assert [c.id for c in rest.auto_paging_iter()] == newest_first[10:]


# ============================================================ payment methods
def test_payment_method_attach_list_detach(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": f"pm-{_uid()}@example.com"})
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    assert pm.id.startswith("pm_")
    assert pm.id != "pm_card_visa"
    assert pm.customer == cus.id
    assert pm.type == "card"
    assert pm.card is not None
    assert (pm.card.brand, pm.card.last4) == ("visa", "4242")

    via_customer = client.v1.customers.payment_methods.list(cus.id)
    assert [p.id for p in via_customer.data] == [pm.id]
    via_filter = client.v1.payment_methods.list(params={"customer": cus.id, "type": "card"})
    assert [p.id for p in via_filter.data] == [pm.id]
    assert client.v1.payment_methods.retrieve(pm.id).customer == cus.id

    detached = client.v1.payment_methods.detach(pm.id)
    assert detached.id == pm.id
    assert detached.customer is None
    assert client.v1.customers.payment_methods.list(cus.id).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_methods.detach(pm.id)  # not attached any more


# ============================================================ payment intents
def test_automatic_capture_with_expanded_charge(client: stripe.StripeClient) -> None:
    pi = _pay(client, 2000, description="e2e automatic")
    assert pi.id.startswith("pi_")
    assert pi.status == "succeeded"
    assert (pi.amount, pi.amount_received, pi.amount_capturable) == (2000, 2000, 0)
    assert isinstance(pi.latest_charge, str)
    assert pi.latest_charge.startswith("ch_")

    expanded = client.v1.payment_intents.retrieve(pi.id, params={"expand": ["latest_charge"]})
    charge = expanded.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert charge.id == pi.latest_charge
    assert (charge.paid, charge.captured, charge.status) == (True, True, "succeeded")
    assert (charge.amount, charge.amount_captured, charge.amount_refunded) == (2000, 2000, 0)
    assert charge.payment_intent == pi.id
    assert charge.outcome is not None
    assert charge.outcome.type == "authorized"
    assert charge.outcome.network_status == "approved_by_network"
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4242"

    again = client.v1.charges.retrieve(pi.latest_charge)
    assert again.outcome is not None
    assert again.outcome.type == "authorized"
    charges = client.v1.charges.list(params={"payment_intent": pi.id})
    assert [c.id for c in charges.data] == [pi.latest_charge]


def test_manual_capture_full(client: stripe.StripeClient) -> None:
    pi = _pay(client, 1500, capture_method="manual")
    assert pi.status == "requires_capture"
    assert (pi.amount_capturable, pi.amount_received) == (1500, 0)
    charge = client.v1.charges.retrieve(str(pi.latest_charge))
    assert (charge.captured, charge.amount_captured) == (False, 0)

    captured = client.v1.payment_intents.capture(pi.id)
    assert captured.status == "succeeded"
    assert (captured.amount_received, captured.amount_capturable) == (1500, 0)
    charge = client.v1.charges.retrieve(str(pi.latest_charge))
    assert (charge.captured, charge.amount_captured) == (True, 1500)

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.capture(pi.id)
    assert exc.value.code == "payment_intent_unexpected_state"


def test_manual_capture_partial(client: stripe.StripeClient) -> None:
    pi = _pay(client, 1000, capture_method="manual")
    assert pi.status == "requires_capture"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 1001})
    assert exc.value.param == "amount_to_capture"

    captured = client.v1.payment_intents.capture(pi.id, params={"amount_to_capture": 600})
    assert captured.status == "succeeded"
    assert captured.amount == 1000
    assert captured.amount_received == 600
    charge = client.v1.charges.retrieve(str(captured.latest_charge))
    assert (charge.amount, charge.amount_captured, charge.captured) == (1000, 600, True)


def test_cancel(client: stripe.StripeClient) -> None:
    # Before confirmation: nothing reaches an acquirer.
    pi = client.v1.payment_intents.create(params={"amount": 700, "currency": "eur"})
    assert pi.status == "requires_payment_method"
    canceled = client.v1.payment_intents.cancel(
        pi.id, params={"cancellation_reason": "requested_by_customer"}
    )
    assert canceled.status == "canceled"
    assert canceled.cancellation_reason == "requested_by_customer"
    assert canceled.canceled_at is not None

    # An authorized, uncaptured payment: canceling voids it.
    held = _pay(client, 800, capture_method="manual")
    assert held.status == "requires_capture"
    voided = client.v1.payment_intents.cancel(held.id)
    assert voided.status == "canceled"
    assert voided.amount_capturable == 0
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.capture(held.id)
    assert exc.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.cancel(held.id)


def test_update_then_confirm(client: stripe.StripeClient) -> None:
    pi = client.v1.payment_intents.create(
        params={"amount": 500, "currency": "usd", "metadata": {"a": "1"}}
    )
    updated = client.v1.payment_intents.update(
        pi.id,
        params={"amount": 750, "description": "bigger basket", "metadata": {"b": "2"}},
    )
    assert (updated.amount, updated.description) == (750, "bigger basket")
    assert updated.metadata.to_dict() == {"a": "1", "b": "2"}
    assert client.v1.payment_intents.retrieve(pi.id).amount == 750

    confirmed = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert confirmed.status == "succeeded"
    assert confirmed.amount_received == 750

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.update(pi.id, params={"amount": 900})
    assert exc.value.code == "payment_intent_unexpected_state"


def test_list_payment_intents_by_customer(client: stripe.StripeClient) -> None:
    cus = client.v1.customers.create(params={"email": f"list-{_uid()}@example.com"})
    ids = [
        client.v1.payment_intents.create(
            params={"amount": 100 + i, "currency": "usd", "customer": cus.id}
        ).id
        for i in range(3)
    ]
    listed = client.v1.payment_intents.list(params={"customer": cus.id, "limit": 2})
    assert [p.id for p in listed.data] == [ids[2], ids[1]]
    assert listed.has_more is True
    assert [p.id for p in listed.auto_paging_iter()] == list(reversed(ids))
    assert all(p.customer == cus.id for p in listed.auto_paging_iter())


# ===================================================================== errors
def test_card_error_on_decline(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as exc:
        _pay(client, 1200, payment_method="pm_card_chargeDeclined")
    err = exc.value
    assert err.http_status == 402
    assert err.code == "card_declined"
    assert err.user_message == "Your card was declined."
    assert err.error is not None
    assert err.error.type == "card_error"
    assert err.error.decline_code == "generic_decline"
    assert err.request_id is not None
    assert err.request_id.startswith("req_")
    pi = err.error.payment_intent
    assert pi is not None
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.decline_code == "generic_decline"
    # The failed charge is recorded and tells the merchant why.
    charge = client.v1.charges.retrieve(str(err.error.charge))
    assert (charge.status, charge.paid, charge.failure_code) == ("failed", False, "card_declined")
    assert charge.outcome is not None
    assert charge.outcome.type == "issuer_declined"


def test_invalid_request_errors_name_the_param(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.create(params={"amount": -5, "currency": "usd"})
    assert exc.value.http_status == 400
    assert exc.value.param == "amount"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.payment_intents.create(params={"amount": 100, "currency": "zzz"})
    assert exc.value.param == "currency"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create(params={"email": "not an email"})
    assert exc.value.param == "email"

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.retrieve("cus_doesnotexist000")
    assert exc.value.http_status == 404
    assert exc.value.code == "resource_missing"
    assert exc.value.param == "id"


def test_idempotency_error_on_reused_key(client: stripe.StripeClient) -> None:
    key = f"e2e-idem-conflict-{_uid()}"
    email = f"idem-{_uid()}@example.com"
    first = client.v1.customers.create(params={"email": email}, options={"idempotency_key": key})
    with pytest.raises(stripe.IdempotencyError) as exc:
        client.v1.customers.create(
            params={"email": email, "name": "someone else"}, options={"idempotency_key": key}
        )
    assert exc.value.http_status == 400
    assert client.v1.customers.list(params={"email": email}).data[0].id == first.id


def test_idempotent_retry_replays_the_same_object(client: stripe.StripeClient) -> None:
    key = f"e2e-idem-{_uid()}"
    email = f"retry-{_uid()}@example.com"
    params: stripe.params.CustomerCreateParams = {"email": email, "name": "Once"}
    first = client.v1.customers.create(params=params, options={"idempotency_key": key})
    second = client.v1.customers.create(params=params, options={"idempotency_key": key})
    assert second.id == first.id
    assert [c.id for c in client.v1.customers.list(params={"email": email}).data] == [first.id]

    assert first.last_response is not None
    assert second.last_response is not None
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    assert second.last_response.headers.get("Idempotent-Replayed") == "true"
    assert second.last_response.idempotency_key == key

    # A money-moving create: one payment, one charge, whatever the retries.
    pkey = f"e2e-idem-pi-{_uid()}"
    pay_params: stripe.params.PaymentIntentCreateParams = {
        "amount": 1234,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "confirm": True,
    }
    a = client.v1.payment_intents.create(params=pay_params, options={"idempotency_key": pkey})
    b = client.v1.payment_intents.create(params=pay_params, options={"idempotency_key": pkey})
    assert (a.id, a.latest_charge) == (b.id, b.latest_charge)
    assert b.last_response is not None
    assert b.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(client.v1.charges.list(params={"payment_intent": a.id}).data) == 1

    # A decline is replayed too, as the same error, without a second attempt.
    dkey = f"e2e-idem-decline-{_uid()}"
    declined: stripe.params.PaymentIntentCreateParams = {
        **pay_params,
        "payment_method": "pm_card_chargeDeclined",
    }
    errors = []
    for _ in range(2):
        with pytest.raises(stripe.CardError) as exc:
            client.v1.payment_intents.create(params=declined, options={"idempotency_key": dkey})
        errors.append(exc.value)
    assert errors[0].error is not None
    assert errors[1].error is not None
    assert errors[0].error.charge == errors[1].error.charge
    assert errors[1].headers is not None
    assert errors[1].headers.get("Idempotent-Replayed") == "true"


def test_authentication_error_for_bad_key(stack: Stack) -> None:
    bad = stack.client("pws_test_" + "A" * 40)
    with pytest.raises(stripe.AuthenticationError) as exc:
        bad.v1.customers.list()
    assert exc.value.http_status == 401


def test_permission_errors(stack: Stack) -> None:
    # The publishable key may only do what a browser needs.
    pk = stack.client(stack.publishable_key)
    with pytest.raises(stripe.PermissionError) as exc:
        pk.v1.customers.list()
    assert exc.value.http_status == 403
    with pytest.raises(stripe.PermissionError):
        pk.v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    # ...but it is a valid key: the browser may read an intent with its client secret.
    pi = stack.client().v1.payment_intents.create(params={"amount": 100, "currency": "usd"})
    seen = pk.v1.payment_intents.retrieve(pi.id, params={"client_secret": str(pi.client_secret)})
    assert seen.id == pi.id

    # A restricted key: customers:read and nothing else.
    rk = stack.restricted_key("customers:read")
    assert rk.startswith("pwr_")
    restricted = stack.client(rk)
    restricted.v1.customers.list(params={"limit": 1})  # allowed
    with pytest.raises(stripe.PermissionError):
        restricted.v1.customers.create(params={"email": "nope@example.com"})
    with pytest.raises(stripe.PermissionError):
        restricted.v1.payment_intents.list()


def test_rate_limit_after_failed_authentications(tmp_path: Path) -> None:
    # Its own stack: the throttle would otherwise lock 127.0.0.1 out of the shared one.
    with run_stack(tmp_path, auth_failure_limit="5", auth_failure_window_seconds="60") as limited:
        good = limited.client()
        good.v1.customers.list(params={"limit": 1})
        bad = limited.client("pws_test_" + "B" * 40)
        for _ in range(5):
            with pytest.raises(stripe.AuthenticationError):
                bad.v1.customers.list()
        with pytest.raises(stripe.RateLimitError) as exc:
            bad.v1.customers.list()
        assert exc.value.http_status == 429
        assert exc.value.headers is not None
        assert exc.value.headers.get("Retry-After") == "60"


# ===================================================================== 3-D Secure
def _follow_acs(start_url: str, result: str) -> httpx.URL:
    """Act as the customer's browser: open the ACS page, press a button, follow the
    redirects up to (not into) the merchant's return URL; return that URL."""
    merchant_host = urlsplit(MERCHANT_RETURN_URL).netloc
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(start_url)
        assert page.status_code == 200, page.text
        forms = re.findall(
            r'<form method="post" action="([^"]+)">\s*'
            r'<input type="hidden" name="result" value="([^"]+)">',
            page.text,
        )
        actions = {value: action for action, value in forms}
        assert set(actions) == {"authenticated", "failed"}, page.text
        resp = browser.post(urljoin(start_url, actions[result]), data={"result": result})
        for _ in range(5):
            assert resp.status_code in (302, 303), (resp.status_code, resp.text)
            target = resp.url.join(resp.headers["location"])
            if target.host == merchant_host.split(":")[0]:
                return target
            resp = browser.get(target)
    raise AssertionError("too many redirects before the merchant's return URL")


def test_three_d_secure_authenticated(client: stripe.StripeClient) -> None:
    pi = _pay(
        client,
        3000,
        payment_method="pm_card_threeDSecure2Required",
        return_url=MERCHANT_RETURN_URL,
    )
    assert pi.status == "requires_action"
    assert pi.next_action is not None
    assert pi.next_action.type == "redirect_to_url"
    redirect = pi.next_action.redirect_to_url
    assert redirect is not None
    assert redirect.return_url == MERCHANT_RETURN_URL
    assert redirect.url is not None

    landed = _follow_acs(redirect.url, "authenticated")
    assert str(landed).startswith(MERCHANT_RETURN_URL)
    query = parse_qs(landed.query.decode())
    assert query["order"] == ["42"]
    assert query["payment_intent"] == [pi.id]
    assert query["payment_intent_client_secret"] == [pi.client_secret]
    assert query["redirect_status"] == ["succeeded"]

    done = client.v1.payment_intents.retrieve(pi.id)
    assert done.status == "succeeded"
    assert done.amount_received == 3000
    assert done.next_action is None


def test_three_d_secure_failed(client: stripe.StripeClient) -> None:
    pi = _pay(
        client,
        3100,
        payment_method="pm_card_threeDSecure2Required",
        return_url=MERCHANT_RETURN_URL,
    )
    assert pi.status == "requires_action"
    assert pi.next_action is not None
    assert pi.next_action.redirect_to_url is not None
    assert pi.next_action.redirect_to_url.url is not None

    landed = _follow_acs(pi.next_action.redirect_to_url.url, "failed")
    assert parse_qs(landed.query.decode())["redirect_status"] == ["failed"]
    failed = client.v1.payment_intents.retrieve(pi.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    assert failed.amount_received == 0


# ===================================================================== refunds
def test_refund_full(client: stripe.StripeClient) -> None:
    pi = _pay(client, 2500)
    refund = client.v1.refunds.create(params={"payment_intent": pi.id, "reason": "duplicate"})
    assert refund.id.startswith("re_")
    assert (refund.amount, refund.status, refund.reason) == (2500, "succeeded", "duplicate")
    assert refund.charge == pi.latest_charge
    charge = client.v1.charges.retrieve(str(pi.latest_charge))
    assert (charge.amount_refunded, charge.refunded) == (2500, True)
    assert client.v1.refunds.retrieve(refund.id).amount == 2500
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.refunds.create(params={"charge": str(pi.latest_charge), "amount": 1})


def test_refund_partial_and_over_refund(client: stripe.StripeClient) -> None:
    pi = _pay(client, 1000)
    charge_id = str(pi.latest_charge)
    first = client.v1.refunds.create(params={"charge": charge_id, "amount": 300})
    assert (first.amount, first.status) == (300, "succeeded")

    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 701})
    assert exc.value.param == "amount"
    assert exc.value.code == "amount_too_large"

    second = client.v1.refunds.create(params={"payment_intent": pi.id, "amount": 700})
    assert second.amount == 700
    charge = client.v1.charges.retrieve(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (1000, True)
    listed = client.v1.refunds.list(params={"payment_intent": pi.id})
    assert [r.id for r in listed.data] == [second.id, first.id]


# ============================================================== events, webhooks
def test_events_list_and_retrieve(client: stripe.StripeClient) -> None:
    pi = _pay(client, 1111)
    events = client.v1.events.list(params={"type": "payment_intent.succeeded", "limit": 20})
    mine = [e for e in events.data if e.data.object["id"] == pi.id]
    assert len(mine) == 1
    ev = mine[0]
    assert ev.id.startswith("evt_")
    assert ev.type == "payment_intent.succeeded"
    assert ev.data.object["status"] == "succeeded"

    again = client.v1.events.retrieve(ev.id)
    assert (again.id, again.type, again.data.object["id"]) == (ev.id, ev.type, pi.id)

    wildcard = client.v1.events.list(params={"type": "charge.*", "limit": 20})
    assert all(e.type.startswith("charge.") for e in wildcard.data)
    assert any(e.data.object["id"] == pi.latest_charge for e in wildcard.data)


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> list[Delivery]:
        with self.lock:
            return list(self.deliveries)

    def wait_for(
        self, pred: Callable[[Delivery], bool], n: int, timeout: float = 60
    ) -> list[Delivery]:
        def found() -> list[Delivery] | None:
            hits = [d for d in self.snapshot() if pred(d)]
            return hits if len(hits) >= n else None

        hits: list[Delivery] = _poll(found, timeout, f"{n} webhook deliveries")
        return hits


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    box: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            rec = box["r"]
            with rec.lock:
                rec.deliveries.append(Delivery(self.path, dict(self.headers.items()), body))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hooks")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box["r"]
    finally:
        server.shutdown()
        server.server_close()


def _v1_count(sig_header: str) -> int:
    return sum(1 for part in sig_header.split(",") if part.strip().startswith("v1="))


def test_webhooks_signed_and_secret_roll(
    stack: Stack, client: stripe.StripeClient, receiver: Receiver
) -> None:
    ep = client.v1.webhook_endpoints.create(
        params={
            "url": receiver.url,
            "enabled_events": ["payment_intent.succeeded", "charge.succeeded"],
        }
    )
    try:
        secret = ep.secret
        assert secret is not None
        assert secret.startswith("whsec_")
        stack.issued_secrets.append(secret)
        assert "secret" not in client.v1.webhook_endpoints.retrieve(ep.id)

        pi = _pay(client, 4200)

        def about_pi(d: Delivery) -> bool:
            obj = d.event["data"]["object"]
            return pi.id in (obj.get("id"), obj.get("payment_intent"))

        hits = receiver.wait_for(about_pi, 2)
        assert sorted(d.event["type"] for d in hits) == [
            "charge.succeeded",
            "payment_intent.succeeded",
        ]
        for d in hits:
            assert d.headers.get("Content-Type", "").startswith("application/json")
            sig = d.headers["Stripe-Signature"]
            assert _v1_count(sig) == 1
            event = stripe.Webhook.construct_event(d.body, sig, secret)
            assert event.id == d.event["id"]
            if event.type == "payment_intent.succeeded":
                assert event.data.object["id"] == pi.id
            else:
                assert event.type == "charge.succeeded"
                assert event.data.object["id"] == pi.latest_charge
                assert event.data.object["payment_intent"] == pi.id
            with pytest.raises(stripe.SignatureVerificationError):
                stripe.Webhook.construct_event(d.body, sig, "whsec_" + "x" * 43)
        # Only subscribed types reach the endpoint.
        assert {d.event["type"] for d in receiver.snapshot()} <= {
            "payment_intent.succeeded",
            "charge.succeeded",
        }

        # Roll the secret: during the overlap, both secrets sign every delivery.
        rolled = client.raw_request("post", f"/v1/webhook_endpoints/{ep.id}/roll_secret")
        new_secret = rolled.data["secret"]
        assert isinstance(new_secret, str)
        assert new_secret.startswith("whsec_")
        assert new_secret != secret
        stack.issued_secrets.append(new_secret)

        pi2 = _pay(client, 4300)
        (d2,) = receiver.wait_for(
            lambda d: (
                d.event["type"] == "payment_intent.succeeded"
                and d.event["data"]["object"]["id"] == pi2.id
            ),
            1,
        )
        sig2 = d2.headers["Stripe-Signature"]
        assert _v1_count(sig2) == 2
        assert stripe.Webhook.construct_event(d2.body, sig2, new_secret).data.object["id"] == pi2.id
        assert stripe.Webhook.construct_event(d2.body, sig2, secret).data.object["id"] == pi2.id
    finally:
        client.v1.webhook_endpoints.delete(ep.id)


# ====================================================== acquirer faults, full stack
@pytest.fixture
def faults(stack: Stack) -> Iterator[Stack]:
    stack.reset_faults()
    yield stack
    stack.reset_faults()


def test_failover_when_primary_acquirer_answers_503(
    faults: Stack, client: stripe.StripeClient
) -> None:
    a0, b0 = faults.authorizations_total("sandbox_a"), faults.authorizations_total("sandbox_b")
    faults.faults("sandbox_a", mode="error_503", count=None)
    pis = [_pay(client, 900 + i) for i in range(2)]
    assert [p.status for p in pis] == ["succeeded", "succeeded"]
    # Refunds go to the acquirer that holds the charge (B), so they work too.
    refund = client.v1.refunds.create(params={"payment_intent": pis[0].id})
    assert refund.status == "succeeded"
    assert faults.authorizations_total("sandbox_a") == a0
    assert faults.authorizations_total("sandbox_b") == b0 + 2


def test_lost_response_is_never_charged_twice(faults: Stack, client: stripe.StripeClient) -> None:
    a0, b0 = faults.authorizations_total("sandbox_a"), faults.authorizations_total("sandbox_b")
    captured0 = faults.stats("sandbox_a")["amount_captured"]
    faults.faults(
        "sandbox_a", mode="lost_response", latency_ms=3000, count=1, operations=["authorize"]
    )
    pi = _pay(client, 5151)
    assert pi.status in ("succeeded", "processing")
    assert faults.fault_plan("sandbox_a")["mode"] == "none"  # the lost response happened

    def settled() -> stripe.PaymentIntent | None:
        cur = client.v1.payment_intents.retrieve(pi.id)
        return cur if cur.status == "succeeded" else None

    done: stripe.PaymentIntent = _poll(settled, 60, "the payment to settle")
    assert done.amount_received == 5151
    assert len(client.v1.charges.list(params={"payment_intent": pi.id}).data) == 1
    # Exactly one authorization at the acquirer that processed it, none at the other.
    assert faults.authorizations_total("sandbox_a") == a0 + 1
    assert faults.authorizations_total("sandbox_b") == b0
    assert faults.stats("sandbox_a")["amount_captured"] == captured0 + 5151


# ======================================================================= leaks
def _needles(secret: str) -> list[bytes]:
    """The secret itself and its random part (without the public prefix)."""
    body = re.sub(r"^(pw[spr]_(test|live)_|whsec_)", "", secret)
    return [secret.encode(), body.encode()] if len(body) >= 20 else [secret.encode()]


def test_zz_no_secret_in_logs_or_database(stack: Stack, client: stripe.StripeClient) -> None:
    assert LEAK_TEST_NAME == "test_zz_no_secret_in_logs_or_database"
    # Exercise the paths that handle secrets even when this test runs alone.
    ep = client.v1.webhook_endpoints.create(
        params={"url": "http://127.0.0.1:9/never", "enabled_events": ["customer.created"]}
    )
    assert ep.secret is not None
    stack.issued_secrets.append(ep.secret)
    rolled = client.raw_request("post", f"/v1/webhook_endpoints/{ep.id}/roll_secret")
    stack.issued_secrets.append(rolled.data["secret"])
    client.v1.webhook_endpoints.delete(ep.id)
    stack.restricted_key("customers:read")  # recorded in issued_secrets
    with contextlib.suppress(stripe.AuthenticationError):
        stack.client(stack.secret_key + "x").v1.customers.list()
    _pay(client, 777)
    time.sleep(0.5)  # let the background workers write what they write

    logs = sorted((stack.home / "logs").glob("*"))
    assert logs, "no log files to check"
    dbs = sorted(stack.home.glob("gateway.db*"))
    assert any(p.name == "gateway.db" for p in dbs)
    secrets = [*stack.issued_secrets, stack.acquirer_token]
    leaks = []
    for path in [*logs, *dbs]:
        data = path.read_bytes()
        for secret in secrets:
            if any(n in data for n in _needles(secret)):
                leaks.append(f"{path.name}: {secret[:10]}...")
    assert not leaks, f"secrets found in clear: {leaks}"
