"""Tenant isolation and access control, for every endpoint of the /v1 surface.

The endpoint list comes from the route tables themselves, so an endpoint added
later is covered (and must keep the guarantees) without editing this file.

Merchant A owns one of everything (customer, payment methods, payment intents
in several states, a charge, a refund, events, a webhook endpoint). Then, per
endpoint:

* another merchant's key, and A's own *live-mode* key, see nothing of it: 404
  on A's objects, empty lists, A's data nowhere in any response body, and A's
  objects unchanged afterwards;
* missing, malformed, badly-checksummed, unknown, revoked and expired keys get
  401 in Stripe's error shape;
* a publishable key gets 403 except on the browser-safe routes;
* restricted keys get exactly their scopes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from paywarden.customers.models import Customer
from paywarden.gateway import fraud_routes, routes, webhook_routes
from paywarden.gateway.container import Gateway
from paywarden.http.api import Endpoint
from paywarden.tenancy import service as tenancy
from paywarden.tenancy.keys import generate_key, hash_key
from paywarden.tenancy.models import ApiKey, SecurityEvent
from paywarden.tenancy.scopes import RESOURCES
from tests.conftest import Merchant, flatten, make_merchant

ENDPOINTS: list[Endpoint] = [
    *routes.endpoints(),
    *webhook_routes.endpoints(),
    *fraud_routes.endpoints(),
]
EP_IDS = [f"{ep.method} {ep.path}" for ep in ENDPOINTS]
HOOK_URL = "http://127.0.0.1:9/hook"
MARKER = "tenantAprivate7c1e"  # in A's objects; must never reach anyone else
# A Stripe test card number: tokens go through the real card vault.
CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
# Lists that are the same for everyone (the vault's public encryption keys).
PUBLIC_LISTS = frozenset({"/v1/paywarden/encryption_keys"})
INTERNALS = ("Traceback", "sqlalchemy", 'File "', "psycopg", "sqlite")


# --------------------------------------------------------------------- helpers
def call(
    client: httpx.Client,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request as a Stripe SDK sends it: query string for GET/DELETE, form for POST."""
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    data = flatten(params or {})
    if method == "POST":
        r = client.request(method, path, data=data, headers=h)
    else:
        r = client.request(method, path, params=data, headers=h)
    assert r.headers.get("Request-Id", "").startswith("req_"), (method, path, r.headers)
    assert r.status_code < 500, (method, path, r.status_code, r.text)
    for word in INTERNALS:
        assert word not in r.text, (method, path, word, r.text)
    return r


def ok(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def assert_error(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Stripe's error envelope with the given status (and code, if given)."""
    assert r.status_code == status, (status, r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert isinstance(err.get("type"), str) and err["type"], err
    assert isinstance(err.get("message"), str) and err["message"], err
    if code is not None:
        assert err.get("code") == code, err
    return err


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


_ID_PREFIXES = (
    "cus_", "pm_", "pi_", "ch_", "re_", "evt_", "we_", "whsec_", "acct_", "py_",
    "tok_", "rsl_", "rsli_", "rule_",
)  # fmt: skip


def _owned_tokens(bodies: list[Any]) -> set[str]:
    """Every object id, client secret and webhook secret in A's responses."""
    out: set[str] = set()
    for s in (s for b in bodies for s in _strings(b)):
        if s.startswith("pm_card_") or (s.startswith("tok_") and len(s) < 28):
            continue  # Stripe's public magic test ids, not A's data
        if s.startswith(_ID_PREFIXES) and " " not in s and len(s) >= 10:
            out.add(s)
    return out


@dataclass
class World:
    """Merchant A's objects (test mode)."""

    customer: str
    pm_attached: str
    pm_free: str
    pi_succeeded: str
    pi_capturable: str
    pi_open: str  # requires_confirmation
    pi_cancelable: str  # requires_payment_method
    charge: str
    refund: str
    event: str
    webhook: str
    token: str  # a vaulted card's single-use token (tok_...)
    value_list: str
    value_list_item: str
    rule: str
    review: str
    secret_of: dict[str, str]  # payment intent id -> client_secret
    tokens: set[str] = field(default_factory=set)  # everything A owns that is secret-ish

    def by_resource(self, resource: str) -> str:
        return {
            "customers": self.customer,
            "payment_methods": self.pm_attached,
            "payment_intents": self.pi_succeeded,
            "charges": self.charge,
            "refunds": self.refund,
            "events": self.event,
            "webhook_endpoints": self.webhook,
            "tokens": self.token,
            "radar": self.value_list,
            "audit": self.value_list,  # the audit API has no per-object reads by id
        }[resource]


def build_world(client: httpx.Client, a: Merchant) -> World:
    key = a.secret_key
    bodies: list[Any] = []

    def post(path: str, params: dict[str, Any]) -> dict[str, Any]:
        body = ok(call(client, "POST", path, params, key=key))
        bodies.append(body)
        return body

    cus = post(
        "/v1/customers",
        {"email": f"{MARKER}@a.example", "name": MARKER, "metadata": {"owner": MARKER}},
    )
    pm = post("/v1/payment_methods", {"type": "card", "card": {"token": "tok_visa"}})
    post(f"/v1/payment_methods/{pm['id']}/attach", {"customer": cus["id"]})
    pm_free = post("/v1/payment_methods", {"type": "card", "card": {"token": "tok_mastercard"}})
    tok = post("/v1/tokens", {"card": CARD})
    vl = post(
        "/v1/radar/value_lists",
        {"alias": "a_list", "name": MARKER, "item_type": "string", "metadata": {"o": MARKER}},
    )
    vli = post("/v1/radar/value_list_items", {"value_list": vl["id"], "value": MARKER})
    rule = post(
        "/v1/paywarden/fraud/rules",
        {"rule": f"Block if :email: = '{MARKER}'", "reason": MARKER},
    )
    pi_s = post(
        "/v1/payment_intents",
        {
            "amount": 2000,
            "currency": "usd",
            "customer": cus["id"],
            "payment_method": pm["id"],
            "confirm": True,
            "description": MARKER,
        },
    )
    assert pi_s["status"] == "succeeded", pi_s
    refund = post("/v1/refunds", {"payment_intent": pi_s["id"], "amount": 500})
    pi_cap = post(
        "/v1/payment_intents",
        {
            "amount": 1500,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        },
    )
    assert pi_cap["status"] == "requires_capture", pi_cap
    post(
        "/v1/paywarden/fraud/rules",
        {"rule": "Review if :amount: = 4321", "reason": MARKER},
    )
    pi_review = post(
        "/v1/payment_intents",
        {"amount": 4321, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True},
    )
    held = ok(call(client, "GET", f"/v1/charges/{pi_review['latest_charge']}", {}, key=key))
    assert held["review"], held
    pi_open = post(
        "/v1/payment_intents",
        {"amount": 1200, "currency": "eur", "payment_method": "pm_card_visa"},
    )
    assert pi_open["status"] == "requires_confirmation", pi_open
    pi_cancel = post("/v1/payment_intents", {"amount": 900, "currency": "usd"})
    assert pi_cancel["status"] == "requires_payment_method", pi_cancel
    we = post(
        "/v1/webhook_endpoints",
        {"url": HOOK_URL, "enabled_events": ["*"], "description": MARKER},
    )
    events = ok(call(client, "GET", "/v1/events", {"limit": 100}, key=key))
    bodies.append(events)
    assert events["data"], "A's actions must have produced events"
    tokens = _owned_tokens(bodies) | {a.account_id}
    return World(
        customer=cus["id"],
        pm_attached=pm["id"],
        pm_free=pm_free["id"],
        pi_succeeded=pi_s["id"],
        pi_capturable=pi_cap["id"],
        pi_open=pi_open["id"],
        pi_cancelable=pi_cancel["id"],
        charge=pi_s["latest_charge"],
        refund=refund["id"],
        event=events["data"][-1]["id"],
        webhook=we["id"],
        token=tok["id"],
        value_list=vl["id"],
        value_list_item=vli["id"],
        rule=rule["id"],
        review=held["review"],
        secret_of={p["id"]: p["client_secret"] for p in (pi_s, pi_cap, pi_open, pi_cancel)},
        tokens=tokens,
    )


def snapshot(client: httpx.Client, a: Merchant, w: World) -> dict[str, Any]:
    """A's view of its own objects (to prove nobody else changed them)."""
    key = a.secret_key
    paths = [
        f"/v1/customers/{w.customer}",
        f"/v1/payment_methods/{w.pm_attached}",
        f"/v1/payment_methods/{w.pm_free}",
        *(f"/v1/payment_intents/{pi}" for pi in w.secret_of),
        f"/v1/charges/{w.charge}",
        f"/v1/refunds/{w.refund}",
        f"/v1/webhook_endpoints/{w.webhook}",
        "/v1/events?limit=100",
        "/v1/customers?limit=100",
        "/v1/payment_intents?limit=100",
        "/v1/refunds?limit=100",
        "/v1/webhook_endpoints?limit=100",
        f"/v1/customers/{w.customer}/payment_methods",
    ]
    return {p: ok(call(client, "GET", p, key=key)) for p in paths}


# What a legitimate caller sends to each endpoint: (object id for {id}, params).
Happy = Callable[["World"], tuple[str | None, dict[str, Any]]]
HAPPY: dict[tuple[str, str], Happy] = {
    ("POST", "/v1/customers"): lambda w: (None, {"email": "new@example.com"}),
    ("GET", "/v1/customers"): lambda w: (None, {}),
    ("GET", "/v1/customers/{id}"): lambda w: (w.customer, {}),
    ("POST", "/v1/customers/{id}"): lambda w: (w.customer, {"name": "Changed"}),
    ("DELETE", "/v1/customers/{id}"): lambda w: (w.customer, {}),
    ("GET", "/v1/customers/{id}/payment_methods"): lambda w: (w.customer, {}),
    ("POST", "/v1/payment_methods"): lambda w: (
        None,
        {"type": "card", "card": {"token": "tok_visa"}},
    ),
    ("GET", "/v1/payment_methods"): lambda w: (None, {"customer": w.customer}),
    ("GET", "/v1/payment_methods/{id}"): lambda w: (w.pm_attached, {}),
    ("POST", "/v1/payment_methods/{id}"): lambda w: (w.pm_attached, {"metadata": {"k": "v"}}),
    ("POST", "/v1/payment_methods/{id}/attach"): lambda w: (w.pm_free, {"customer": w.customer}),
    ("POST", "/v1/payment_methods/{id}/detach"): lambda w: (w.pm_attached, {}),
    ("POST", "/v1/payment_intents"): lambda w: (
        None,
        {"amount": 1000, "currency": "usd", "customer": w.customer},
    ),
    ("GET", "/v1/payment_intents"): lambda w: (None, {}),
    ("GET", "/v1/payment_intents/{id}"): lambda w: (w.pi_succeeded, {}),
    ("POST", "/v1/payment_intents/{id}"): lambda w: (w.pi_open, {"description": "changed"}),
    ("POST", "/v1/payment_intents/{id}/confirm"): lambda w: (w.pi_open, {}),
    ("POST", "/v1/payment_intents/{id}/capture"): lambda w: (w.pi_capturable, {}),
    ("POST", "/v1/payment_intents/{id}/cancel"): lambda w: (w.pi_cancelable, {}),
    ("GET", "/v1/charges"): lambda w: (None, {}),
    ("GET", "/v1/charges/{id}"): lambda w: (w.charge, {}),
    ("POST", "/v1/refunds"): lambda w: (None, {"payment_intent": w.pi_succeeded, "amount": 100}),
    ("GET", "/v1/refunds"): lambda w: (None, {}),
    ("GET", "/v1/refunds/{id}"): lambda w: (w.refund, {}),
    ("POST", "/v1/refunds/{id}"): lambda w: (w.refund, {"metadata": {"k": "v"}}),
    ("GET", "/v1/events"): lambda w: (None, {}),
    ("GET", "/v1/events/{id}"): lambda w: (w.event, {}),
    ("GET", "/v1/paywarden/ping"): lambda w: (None, {}),
    ("POST", "/v1/tokens"): lambda w: (None, {"card": CARD}),
    ("GET", "/v1/tokens/{id}"): lambda w: (w.token, {}),
    ("GET", "/v1/paywarden/encryption_keys"): lambda w: (None, {}),
    ("POST", "/v1/paywarden/device_sessions"): lambda w: (None, {"signals": {"screen": "1x1"}}),
    ("POST", "/v1/radar/value_lists"): lambda w: (None, {"alias": "b_list", "name": "B"}),
    ("GET", "/v1/radar/value_lists"): lambda w: (None, {}),
    ("GET", "/v1/radar/value_lists/{id}"): lambda w: (w.value_list, {}),
    ("POST", "/v1/radar/value_lists/{id}"): lambda w: (w.value_list, {"name": "changed"}),
    ("DELETE", "/v1/radar/value_lists/{id}"): lambda w: (w.value_list, {}),
    ("POST", "/v1/radar/value_list_items"): lambda w: (
        None,
        {"value_list": w.value_list, "value": "new-item"},
    ),
    ("GET", "/v1/radar/value_list_items"): lambda w: (None, {"value_list": w.value_list}),
    ("GET", "/v1/radar/value_list_items/{id}"): lambda w: (w.value_list_item, {}),
    ("DELETE", "/v1/radar/value_list_items/{id}"): lambda w: (w.value_list_item, {}),
    ("POST", "/v1/paywarden/fraud/rules"): lambda w: (
        None,
        {"rule": "Review if :amount_in_usd: > 1000", "reason": "test"},
    ),
    ("GET", "/v1/paywarden/fraud/rules"): lambda w: (None, {}),
    ("GET", "/v1/reviews"): lambda w: (None, {}),
    ("GET", "/v1/paywarden/audit/tree_head"): lambda w: (None, {}),
    ("GET", "/v1/paywarden/audit/public_keys"): lambda w: (None, {}),
    ("GET", "/v1/paywarden/audit/entries"): lambda w: (None, {}),
    ("GET", "/v1/paywarden/audit/proofs/inclusion"): lambda w: (None, {"seq": 0}),
    ("GET", "/v1/paywarden/audit/proofs/consistency"): lambda w: (None, {"old_size": 1}),
    ("GET", "/v1/reviews/{id}"): lambda w: (w.review, {}),
    ("POST", "/v1/reviews/{id}/approve"): lambda w: (w.review, {}),
    ("POST", "/v1/paywarden/fraud/reports"): lambda w: (
        None,
        {"charge": w.charge, "label": "safe"},
    ),
    ("GET", "/v1/paywarden/fraud/rules/{id}"): lambda w: (w.rule, {}),
    ("POST", "/v1/paywarden/fraud/rules/{id}"): lambda w: (
        w.rule,
        {"mode": "shadow", "reason": "test"},
    ),
    ("DELETE", "/v1/paywarden/fraud/rules/{id}"): lambda w: (w.rule, {}),
    ("POST", "/v1/webhook_endpoints"): lambda w: (
        None,
        {"url": HOOK_URL, "enabled_events": ["*"]},
    ),
    ("GET", "/v1/webhook_endpoints"): lambda w: (None, {}),
    ("GET", "/v1/webhook_endpoints/{id}"): lambda w: (w.webhook, {}),
    ("POST", "/v1/webhook_endpoints/{id}"): lambda w: (w.webhook, {"description": "changed"}),
    ("DELETE", "/v1/webhook_endpoints/{id}"): lambda w: (w.webhook, {}),
    ("POST", "/v1/webhook_endpoints/{id}/roll_secret"): lambda w: (w.webhook, {}),
}


def happy_request(ep: Endpoint, w: World) -> tuple[str, dict[str, Any]]:
    """Path and params that succeed for A; unknown endpoints get A's object of their resource."""
    make = HAPPY.get((ep.method, ep.path))
    obj, params = make(w) if make else (w.by_resource(ep.resource), {})
    path = ep.path.format(id=obj) if "{id}" in ep.path else ep.path
    return path, params


def list_probes(path: str, w: World) -> list[dict[str, Any]]:
    """List filters and cursors naming A's objects: at most a 404, never A's rows."""
    return {
        "/v1/customers": [
            {"starting_after": w.customer},
            {"ending_before": w.customer},
            {"email": f"{MARKER}@a.example"},
        ],
        "/v1/payment_methods": [{"customer": w.customer, "starting_after": w.pm_attached}],
        "/v1/payment_intents": [{"customer": w.customer}, {"starting_after": w.pi_open}],
        "/v1/charges": [
            {"payment_intent": w.pi_succeeded},
            {"customer": w.customer},
            {"starting_after": w.charge},
        ],
        "/v1/refunds": [
            {"charge": w.charge},
            {"payment_intent": w.pi_succeeded},
            {"ending_before": w.refund},
        ],
        "/v1/events": [{"starting_after": w.event}, {"type": "customer.created"}, {"type": "*"}],
        "/v1/webhook_endpoints": [{"starting_after": w.webhook}],
        "/v1/radar/value_lists": [{"alias": "a_list"}, {"contains": MARKER.lower()}],
        "/v1/radar/value_list_items": [{"value_list": w.value_list}],
        "/v1/paywarden/fraud/rules": [{"starting_after": w.rule}],
    }.get(path, [])


def create_probes(path: str, w: World) -> list[dict[str, Any]]:
    """Creates that reference A's objects: must be 404, never use them."""
    pi: dict[str, Any] = {"amount": 1000, "currency": "usd"}
    probes: dict[str, list[dict[str, Any]]] = {
        "/v1/payment_intents": [
            {**pi, "customer": w.customer},
            {**pi, "payment_method": w.pm_free},
            {**pi, "payment_method": w.pm_attached, "confirm": True},
        ],
        "/v1/refunds": [
            {"payment_intent": w.pi_succeeded},
            {"charge": w.charge},
            {"charge": w.charge, "amount": 100},
        ],
        "/v1/payment_methods": [{"type": "card", "card": {"token": w.token}}],
        "/v1/radar/value_list_items": [{"value_list": w.value_list, "value": "x"}],
    }
    # (A rule naming A's list alias from another tenant is a 400 "unknown list":
    # tests/api/test_fraud_admin.py checks it.)
    return probes.get(path, [])


PLAIN_CREATE: dict[str, dict[str, Any]] = {
    "/v1/customers": {"email": "intruder@b.example"},
    "/v1/payment_methods": {"type": "card", "card": {"token": "tok_visa"}},
    "/v1/payment_intents": {"amount": 1000, "currency": "usd"},
    "/v1/webhook_endpoints": {"url": HOOK_URL, "enabled_events": ["*"]},
    "/v1/tokens": {"card": CARD},
    "/v1/radar/value_lists": {"alias": "intruder_list", "name": "I"},
    "/v1/paywarden/fraud/rules": {"rule": "Review if :amount_in_usd: > 1", "reason": "x"},
}


def assert_no_leak(r: httpx.Response, w: World, sent: str) -> None:
    """Nothing of A's in the body, except ids the caller itself sent (echoed in a 404)."""
    assert MARKER not in r.text, r.text
    leaked = sorted(t for t in w.tokens if t in r.text and t not in sent)
    assert not leaked, (leaked, r.text)


def security_events(gw: Gateway, kind: str | None = None) -> list[SecurityEvent]:
    with gw.db.read() as s:
        q = select(SecurityEvent).order_by(SecurityEvent.pk)
        if kind:
            q = q.where(SecurityEvent.kind == kind)
        return list(s.scalars(q))


def key_record(gw: Gateway, raw: str) -> ApiKey:
    with gw.db.read() as s:
        rec = s.scalar(
            select(ApiKey).where(ApiKey.key_hash == hash_key(raw, gw.secrets.api_key_pepper))
        )
        assert rec is not None
        return rec


# -------------------------------------------------------------------- fixtures
@pytest.fixture
def world(client: httpx.Client, merchant: Merchant) -> World:
    return build_world(client, merchant)


def test_route_table_is_well_formed() -> None:
    """Every endpoint names a scoped resource (else no restricted key could reach it)."""
    assert len(set(EP_IDS)) == len(EP_IDS)
    for ep in ENDPOINTS:
        assert ep.resource in RESOURCES, ep
        assert ep.method in ("GET", "POST", "DELETE"), ep


# ----------------------------------------------------------- tenants and modes
@pytest.mark.parametrize("intruder", ["other_merchant", "own_live_key"])
@pytest.mark.parametrize("ep", ENDPOINTS, ids=EP_IDS)
def test_foreign_key_sees_nothing_of_a(
    ep: Endpoint,
    intruder: str,
    client: httpx.Client,
    gateway: Gateway,
    merchant: Merchant,
    world: World,
) -> None:
    if intruder == "other_merchant":
        key, livemode = make_merchant(gateway, "Intruder").secret_key, False
    else:
        key, livemode = merchant.key("secret", True), True
    before = snapshot(client, merchant, world)
    path, params = happy_request(ep, world)

    # A's own live key belongs to A's account: its id is not a leak to it.
    own = merchant.account_id if intruder == "own_live_key" else ""

    def attempt(p: dict[str, Any]) -> httpx.Response:
        r = call(client, ep.method, path, p, key=key)
        assert_no_leak(r, world, sent=path + json.dumps(p) + own)
        return r

    if "{id}" in ep.path:
        r = attempt(params)
        assert_error(r, 404, "resource_missing")
    elif ep.method == "GET":
        probes = [params, *list_probes(ep.path, world)]
        if len(probes) == 1 and "starting_after" in ep.spec:  # an endpoint added later
            probes.append({"starting_after": world.by_resource(ep.resource)})
        for probe in probes:
            r = attempt(probe)
            names_a = any(t in json.dumps(probe) for t in world.tokens)
            if names_a and r.status_code == 404:
                assert_error(r, 404, "resource_missing")
                continue
            body = ok(r)
            if path in PUBLIC_LISTS:
                assert_no_leak(r, world, sent=json.dumps(probe) + own)
            elif body.get("object") == "list":
                assert body["data"] == [], (probe, body)
            else:
                assert body.get("livemode") in (None, livemode), body
    else:
        for probe in create_probes(ep.path, world):
            r = attempt(probe)
            assert_error(r, 404, "resource_missing")
        plain = PLAIN_CREATE.get(ep.path)
        if plain is not None:
            r = attempt(plain)
            if intruder == "other_merchant":
                assert r.status_code == 200, r.text
            if r.status_code == 200:
                body = r.json()
                assert body["livemode"] is livemode, body
                assert body["id"] not in world.tokens
            else:
                # Live mode refuses Stripe's test tokens: a plain 4xx, nothing of A's.
                assert_error(r, r.status_code)
    assert snapshot(client, merchant, world) == before


@pytest.mark.parametrize(
    "case",
    [
        "attach_own_pm_to_a_customer",
        "confirm_own_pi_with_a_pm",
        "update_own_pi_with_a_customer",
        "update_own_pi_with_a_pm",
        "create_pi_with_a_pm_and_own_customer",
        "list_own_customer_pms_with_a_cursor",
    ],
)
def test_references_to_another_tenants_objects_are_missing(
    case: str, client: httpx.Client, gateway: Gateway, merchant: Merchant, world: World
) -> None:
    b = make_merchant(gateway, "Intruder").secret_key
    b_cus = ok(call(client, "POST", "/v1/customers", {"email": "b@b.example"}, key=b))["id"]
    b_pm = ok(
        call(
            client,
            "POST",
            "/v1/payment_methods",
            {"type": "card", "card": {"token": "tok_visa"}},
            key=b,
        )
    )["id"]
    b_pi = ok(
        call(client, "POST", "/v1/payment_intents", {"amount": 700, "currency": "usd"}, key=b)
    )["id"]
    before = snapshot(client, merchant, world)
    method, path, params = {
        "attach_own_pm_to_a_customer": (
            "POST",
            f"/v1/payment_methods/{b_pm}/attach",
            {"customer": world.customer},
        ),
        "confirm_own_pi_with_a_pm": (
            "POST",
            f"/v1/payment_intents/{b_pi}/confirm",
            {"payment_method": world.pm_free},
        ),
        "update_own_pi_with_a_customer": (
            "POST",
            f"/v1/payment_intents/{b_pi}",
            {"customer": world.customer},
        ),
        "update_own_pi_with_a_pm": (
            "POST",
            f"/v1/payment_intents/{b_pi}",
            {"payment_method": world.pm_attached},
        ),
        "create_pi_with_a_pm_and_own_customer": (
            "POST",
            "/v1/payment_intents",
            {"amount": 500, "currency": "usd", "customer": b_cus, "payment_method": world.pm_free},
        ),
        "list_own_customer_pms_with_a_cursor": (
            "GET",
            f"/v1/customers/{b_cus}/payment_methods",
            {"starting_after": world.pm_attached},
        ),
    }[case]
    r = call(client, method, path, params, key=b)
    assert_error(r, 404, "resource_missing")
    assert_no_leak(r, world, sent=path + json.dumps(params))
    # B's own objects are untouched by the failed attempt.
    pi = ok(call(client, "GET", f"/v1/payment_intents/{b_pi}", key=b))
    assert pi["status"] == "requires_payment_method"
    assert pi["customer"] is None and pi["payment_method"] is None
    assert ok(call(client, "GET", f"/v1/payment_methods/{b_pm}", key=b))["customer"] is None
    assert snapshot(client, merchant, world) == before


def test_publishable_key_of_another_tenant_cannot_use_a_client_secret(
    client: httpx.Client, gateway: Gateway, merchant: Merchant, world: World
) -> None:
    other_pk = make_merchant(gateway, "Intruder").publishable_key
    live_pk = merchant.key("publishable", True)
    pi = world.pi_open
    cs = world.secret_of[pi]
    for pk in (other_pk, live_pk):
        r = call(client, "GET", f"/v1/payment_intents/{pi}", {"client_secret": cs}, key=pk)
        assert_error(r, 404, "resource_missing")
        assert_no_leak(r, world, sent=pi + cs)
        r = call(client, "POST", f"/v1/payment_intents/{pi}/confirm", {"client_secret": cs}, key=pk)
        assert_error(r, 404, "resource_missing")
    after = ok(call(client, "GET", f"/v1/payment_intents/{pi}", key=merchant.secret_key))
    assert after["status"] == "requires_confirmation"


# -------------------------------------------------------------- authentication
def _bad_keys(merchant: Merchant) -> dict[str, str]:
    valid = merchant.secret_key
    flipped = valid[:-1] + ("A" if valid[-1] != "A" else "B")
    return {
        "malformed": "pws_test_123",
        "stripe_style": "sk_test_" + "a" * 24,
        "wrong_checksum": flipped,
        "unknown_but_well_formed": generate_key("secret", False).reveal(),
        "garbage": "not a key at all",
    }


@pytest.mark.parametrize("ep", ENDPOINTS, ids=EP_IDS)
def test_without_a_valid_key_every_endpoint_is_401(
    ep: Endpoint, client: httpx.Client, gateway: Gateway, merchant: Merchant, world: World
) -> None:
    before = snapshot(client, merchant, world)
    path, params = happy_request(ep, world)
    r = call(client, ep.method, path, params)
    err = assert_error(r, 401)
    assert err["type"] == "invalid_request_error"
    assert "API key" in err["message"]
    assert_no_leak(r, world, sent=path)
    bad_keys = _bad_keys(merchant)
    for bad in bad_keys.values():
        r = call(client, ep.method, path, params, key=bad)
        assert_error(r, 401, "api_key_invalid")
        assert_no_leak(r, world, sent=path)
        if len(bad) >= 24:
            assert bad not in r.text, "the presented key must not be echoed in full"
    # Basic auth carries the key as the user name, as curl -u does; a bad one is a 401.
    r = call(client, ep.method, path, params, headers={"Authorization": "Basic !!!"})
    assert_error(r, 401)
    assert snapshot(client, merchant, world) == before
    # Every failure was recorded for review, without the presented key.
    events = security_events(gateway)
    assert len(events) == 2 + len(bad_keys), [e.kind for e in events]
    assert {e.kind for e in events} == {"auth_missing", "auth_failed"}
    for e in events:
        assert e.source == "127.0.0.1"
        assert e.request_id and e.request_id.startswith("req_")
        for bad in bad_keys.values():
            if len(bad) >= 24:
                assert bad[9:-4] not in f"{e.key_hint} {e.detail}", e.key_hint


def _roll(gw: Gateway, m: Merchant, raw: str, overlap: int) -> str:
    rec = key_record(gw, raw)
    with gw.db.write() as s:
        new = tenancy.roll_key(
            s,
            account_id=m.account_id,
            key_id=rec.id,
            pepper=gw.secrets.api_key_pepper,
            now=int(time.time()),
            overlap_seconds=overlap,
        )
        return new.secret.reveal()


def test_revoked_key_is_401(client: httpx.Client, gateway: Gateway, merchant: Merchant) -> None:
    ok(call(client, "GET", "/v1/customers", key=merchant.secret_key))
    rec = key_record(gateway, merchant.secret_key)
    with gateway.db.write() as s:
        tenancy.revoke_key(s, account_id=merchant.account_id, key_id=rec.id, now=int(time.time()))
    for method, path in (("GET", "/v1/customers"), ("POST", "/v1/customers")):
        r = call(client, method, path, key=merchant.secret_key)
        assert_error(r, 401, "api_key_revoked")
        assert merchant.secret_key not in r.text
    # The account's other keys are unaffected.
    ok(call(client, "GET", "/v1/paywarden/ping", key=merchant.publishable_key))


def test_rolled_key_without_overlap_is_expired_at_once(
    client: httpx.Client, gateway: Gateway, merchant: Merchant
) -> None:
    new = _roll(gateway, merchant, merchant.secret_key, overlap=0)
    r = call(client, "GET", "/v1/customers", key=merchant.secret_key)
    assert_error(r, 401, "api_key_expired")
    assert merchant.secret_key not in r.text
    body = ok(call(client, "POST", "/v1/customers", {"name": "x"}, key=new))
    assert body["livemode"] is False


def test_rolled_key_works_until_the_overlap_ends(
    client: httpx.Client, gateway: Gateway, merchant: Merchant
) -> None:
    old = merchant.secret_key
    cus = ok(call(client, "POST", "/v1/customers", {"name": "before roll"}, key=old))["id"]
    # An overlap long enough (at least 7 s: now is rounded down) for both calls
    # below to land inside it even on a loaded machine.
    new = _roll(gateway, merchant, old, overlap=8)
    # During the overlap both keys act for the same account and mode.
    assert ok(call(client, "GET", f"/v1/customers/{cus}", key=old))["id"] == cus
    assert ok(call(client, "GET", f"/v1/customers/{cus}", key=new))["id"] == cus
    expires_at = key_record(gateway, old).expires_at
    assert expires_at is not None
    time.sleep(max(0.0, expires_at - time.time()) + 0.05)
    assert_error(call(client, "GET", f"/v1/customers/{cus}", key=old), 401, "api_key_expired")
    assert ok(call(client, "GET", f"/v1/customers/{cus}", key=new))["id"] == cus


def test_failed_authentications_are_throttled_per_source(
    gateway_url: str, gateway: Gateway, merchant: Merchant
) -> None:
    limit = 3
    gateway.settings.auth_failure_limit = limit
    with httpx.Client(base_url=gateway_url, timeout=30) as c:
        ok(call(c, "GET", "/v1/customers", key=merchant.secret_key))
        bad = _bad_keys(merchant)
        for raw in list(bad.values())[:limit]:
            assert_error(call(c, "GET", "/v1/customers", key=raw), 401)
        for method, path in (("GET", "/v1/customers"), ("POST", "/v1/customers")):
            r = call(
                c,
                method,
                path,
                {"name": "x"} if method == "POST" else None,
                key=merchant.secret_key,
            )
            err = assert_error(r, 429, "rate_limit")
            assert err["type"] == "invalid_request_error"
            assert int(r.headers["Retry-After"]) > 0
        # Not even a correct key gets through; nothing was created.
        with gateway.db.read() as s:
            assert s.scalar(select(func.count()).select_from(Customer)) == 0
    failures = [e for e in security_events(gateway) if e.kind in ("auth_failed", "auth_missing")]
    assert len(failures) == limit
    assert {e.source for e in failures} == {"127.0.0.1"}
    assert all(e.request_id and e.request_id.startswith("req_") for e in failures)
    for e in failures:
        for raw in bad.values():
            if len(raw) >= 24:
                assert raw not in (e.key_hint or "") and raw not in (e.detail or "")
    # Another source is not throttled by 127.0.0.1's failures.
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=gateway_url, timeout=30, transport=transport) as other:
        ok(call(other, "GET", "/v1/customers", key=merchant.secret_key))


# ---------------------------------------------------------- publishable keys
@pytest.mark.parametrize("ep", ENDPOINTS, ids=EP_IDS)
def test_publishable_key_only_reaches_browser_safe_routes(
    ep: Endpoint, client: httpx.Client, gateway: Gateway, merchant: Merchant, world: World
) -> None:
    pk = merchant.publishable_key
    before = snapshot(client, merchant, world)
    path, params = happy_request(ep, world)
    if not ep.publishable:
        r = call(client, ep.method, path, params, key=pk)
        assert_error(r, 403, "secret_key_required")
        assert_no_leak(r, world, sent=path)
        assert snapshot(client, merchant, world) == before
        denied = security_events(gateway, "authz_denied")
        assert len(denied) == 1 and denied[0].account_id == merchant.account_id
        return
    if (ep.method, ep.path) == ("GET", "/v1/payment_intents/{id}"):
        pi, other = world.pi_open, world.pi_succeeded
        r = call(client, "GET", f"/v1/payment_intents/{pi}", key=pk)
        assert_error(r, 400, "parameter_missing")
        for wrong in (world.secret_of[other], world.secret_of[pi] + "x", f"{pi}_secret_nope"):
            r = call(client, "GET", f"/v1/payment_intents/{pi}", {"client_secret": wrong}, key=pk)
            assert_error(r, 404, "resource_missing")
            assert world.secret_of[pi] not in r.text
        body = ok(
            call(
                client,
                "GET",
                f"/v1/payment_intents/{pi}",
                {"client_secret": world.secret_of[pi]},
                key=pk,
            )
        )
        assert body["id"] == pi and body["status"] == "requires_confirmation"
    elif (ep.method, ep.path) == ("POST", "/v1/payment_intents/{id}/confirm"):
        pi, other = world.pi_open, world.pi_cancelable
        r = call(client, "POST", f"/v1/payment_intents/{pi}/confirm", key=pk)
        assert_error(r, 400, "parameter_missing")
        for wrong in (world.secret_of[other], world.secret_of[pi][:-1], "x"):
            r = call(
                client,
                "POST",
                f"/v1/payment_intents/{pi}/confirm",
                {"client_secret": wrong},
                key=pk,
            )
            assert_error(r, 404, "resource_missing")
        assert snapshot(client, merchant, world) == before
        body = ok(
            call(
                client,
                "POST",
                f"/v1/payment_intents/{pi}/confirm",
                {"client_secret": world.secret_of[pi]},
                key=pk,
            )
        )
        assert body["status"] == "succeeded"
    elif (ep.method, ep.path) == ("GET", "/v1/paywarden/ping"):
        assert ok(call(client, "GET", path, key=pk)) == {"object": "ping", "livemode": False}
    else:
        r = call(client, ep.method, path, params, key=pk)
        assert r.status_code not in (401, 403), r.text
    assert security_events(gateway, "authz_denied") == []


# ------------------------------------------------------------ restricted keys
@pytest.mark.parametrize("ep", ENDPOINTS, ids=EP_IDS)
def test_restricted_keys_get_exactly_their_scopes(
    ep: Endpoint, client: httpx.Client, gateway: Gateway, merchant: Merchant, world: World
) -> None:
    path, params = happy_request(ep, world)
    before = snapshot(client, merchant, world)
    others = [res for res in RESOURCES if res != ep.resource]
    lacking = merchant.restricted(dict.fromkeys(others, "write"))
    r = call(client, ep.method, path, params, key=lacking)
    err = assert_error(r, 403)
    assert ep.resource in err["message"]
    assert_no_leak(r, world, sent=path)

    read_only = merchant.restricted({ep.resource: "read"})
    r = call(client, ep.method, path, params, key=read_only)
    if ep.write:
        assert_error(r, 403)
        assert_no_leak(r, world, sent=path)
        assert snapshot(client, merchant, world) == before
        assert len(security_events(gateway, "authz_denied")) == 2
    else:
        ok(r)
        assert len(security_events(gateway, "authz_denied")) == 1

    writer = merchant.restricted({ep.resource: "write"})
    ok(call(client, ep.method, path, params, key=writer))


def test_restricted_live_key_sees_no_test_objects(
    client: httpx.Client, merchant: Merchant, world: World
) -> None:
    live = merchant.restricted(dict.fromkeys(RESOURCES, "write"), livemode=True)
    for ep in ENDPOINTS:
        path, params = happy_request(ep, world)
        if "{id}" not in ep.path:
            continue
        r = call(client, ep.method, path, params, key=live)
        assert_error(r, 404, "resource_missing")
        assert_no_leak(r, world, sent=path + json.dumps(params))


# ------------------------------------------------------------------ request ids
def test_every_response_has_a_unique_request_id(client: httpx.Client, merchant: Merchant) -> None:
    responses = [
        client.get("/v1/customers", headers={"Authorization": f"Bearer {merchant.secret_key}"}),
        client.get("/v1/customers"),
        client.get("/v1/customers", headers={"Authorization": "Bearer nope"}),
        client.get("/v1/nope"),
        client.put("/v1/customers"),
        client.get("/healthz"),
        client.post("/v1/customers", content=b"x" * 200_000),
    ]
    ids = [r.headers.get("Request-Id") for r in responses]
    assert all(i and i.startswith("req_") for i in ids), ids
    assert len(set(ids)) == len(ids)
