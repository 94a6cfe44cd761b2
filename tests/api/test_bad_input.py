"""Hostile and mistaken input: always a Stripe-shaped 4xx, never a 500, never a change.

Every case checks the error envelope ``{"error": {"type", "message", ...}}``,
that no internals (stack traces, SQL, driver names) leak into the body, that a
``Request-Id`` is present, and that the database row counts did not move (a
failed create leaves no row; a failed confirm leaves the intent as it was).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from paywarden.db import Base
from paywarden.gateway import routes, webhook_routes
from paywarden.gateway.container import Gateway
from paywarden.http.api import Endpoint
from tests.conftest import Merchant, flatten

ENDPOINTS: list[Endpoint] = [*routes.endpoints(), *webhook_routes.endpoints()]
INTERNALS = ("Traceback", "sqlalchemy", 'File "', "psycopg", "sqlite")
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
PAN = "4242424242424242"
PAN2 = "5555555555554444"


# --------------------------------------------------------------------- helpers
def send(
    client: httpx.Client,
    method: str,
    path: str,
    body: bytes | str | dict[str, Any] | None = None,
    *,
    ctype: str | None = FORM,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    h = dict(headers or {})
    if key is not None:
        h["Authorization"] = f"Bearer {key}"
    if isinstance(body, dict):
        body = "&".join(f"{quote(k)}={quote(v)}" for k, v in flatten(body).items())
    if body is not None and ctype is not None:
        h["Content-Type"] = ctype
    content = body.encode() if isinstance(body, str) else body
    r = client.request(method, path, content=content, headers=h)
    check_sane(r)
    return r


def check_sane(r: httpx.Response) -> None:
    """What holds for every response, whatever the input."""
    assert r.status_code < 500, (r.status_code, r.text)
    assert r.headers.get("Request-Id", "").startswith("req_"), r.headers
    for word in INTERNALS:
        assert word not in r.text, (word, r.text)


def assert_error(
    r: httpx.Response,
    status: int,
    code: str | None = None,
    param: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    assert r.status_code == status, (status, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert isinstance(err.get("type"), str) and err["type"], err
    assert isinstance(err.get("message"), str) and err["message"], err
    if code is not None:
        assert err.get("code") == code, err
    if param is not None:
        assert err.get("param") == param, err
    if message is not None:
        assert err["message"] == message, err
    return err


def counts(gw: Gateway) -> dict[str, int]:
    with gw.db.read() as s:
        return {
            t.name: int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in Base.metadata.sorted_tables
        }


def dump_db_text(gw: Gateway) -> str:
    """Every value of every row of every table, as text."""
    out: list[str] = []
    with gw.db.read() as s:
        for t in Base.metadata.sorted_tables:
            for row in s.execute(select(t)):
                out.append(repr(tuple(row)))
    return "\n".join(out)


def db_files(gw: Gateway) -> list[Path]:
    home = gw.settings.home
    return sorted(p for p in home.iterdir() if p.name.startswith("gateway.db"))


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: bytes
    ctype: str | None = FORM
    status: int = 400
    code: str | None = None
    param: str | None = None
    message: str | None = None
    method: str = "POST"


PI = "/v1/payment_intents"
CUS = "/v1/customers"
OK_PI = b"currency=usd&"


def _deep_json(depth: int) -> bytes:
    return b'{"metadata":' + b"[" * depth + b"]" * depth + b"}"


MALFORMED: list[Case] = [
    # Form encoding
    Case("unclosed_bracket", CUS, b"metadata[a=1"),
    Case("stray_close_bracket", CUS, b"metadata]a[=1"),
    Case("bracket_first", CUS, b"[a]=1"),
    Case("empty_name", CUS, b"=1"),
    Case("hash_then_scalar", CUS, b"metadata[b]=1&metadata=2"),
    Case("scalar_then_hash", CUS, b"metadata=2&metadata[b]=1"),
    Case("sparse_array", CUS, b"expand[1]=a"),
    Case("sparse_array_gap", CUS, b"expand[0]=a&expand[2]=b"),
    Case("array_styles_mixed", CUS, b"expand[]=a&expand[1]=b"),
    Case("index_then_hash", CUS, b"expand[0]=a&expand[x]=b"),
    Case("duplicate_key", CUS, b"email=a%40example.com&email=b%40example.com"),
    Case("duplicate_nested_key", CUS, b"metadata[a]=1&metadata[a]=2"),
    Case("nested_too_deep", CUS, b"metadata[a][b][c][d][e]=1"),
    Case("name_too_long", CUS, b"x" * 201 + b"=1"),
    # JSON
    Case("invalid_json", CUS, b"{", JSON),
    Case("json_trailing_garbage", CUS, b'{"email": "a@example.com"} x', JSON),
    Case("json_float_amount", PI, b'{"amount": 12.5, "currency": "usd"}', JSON),
    Case("json_exponent_amount", PI, b'{"amount": 1e3, "currency": "usd"}', JSON),
    Case("json_nan_amount", PI, b'{"amount": NaN, "currency": "usd"}', JSON),
    Case("json_float_in_metadata", CUS, b'{"metadata": {"a": 1.5}}', JSON),
    Case(
        "json_5000_digit_amount", PI, b'{"amount": ' + b"9" * 5000 + b', "currency": "usd"}', JSON
    ),
    Case("json_array", CUS, b"[1, 2]", JSON),
    Case("json_string", CUS, b'"email=a@example.com"', JSON),
    Case("json_null", CUS, b"null", JSON),
    Case("json_number", CUS, b"1", JSON),
    Case("json_too_deep", CUS, _deep_json(10), JSON),
    Case("json_recursion_bomb", CUS, _deep_json(30000), JSON),
    Case(
        "json_bool_amount",
        PI,
        b'{"amount": true, "currency": "usd"}',
        JSON,
        code="parameter_invalid_integer",
        param="amount",
    ),
    Case("json_list_amount", PI, b'{"amount": [1], "currency": "usd"}', JSON, param="amount"),
    Case("json_metadata_string", CUS, b'{"metadata": "abc"}', JSON, param="metadata"),
    Case("json_metadata_list", CUS, b'{"metadata": ["a"]}', JSON, param="metadata"),
    Case(
        "json_nested_metadata", CUS, b'{"metadata": {"a": {"b": "c"}}}', JSON, param="metadata[a]"
    ),
    Case("json_email_number", CUS, b'{"email": 5}', JSON, param="email"),
    Case("json_1001_keys", CUS, json.dumps({f"k{i}": "1" for i in range(1001)}).encode(), JSON),
    # Content types and encodings
    Case("text_plain", CUS, b"email=a%40example.com", "text/plain"),
    Case("multipart", CUS, b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
    Case("xml", CUS, b"<email>a@example.com</email>", "application/xml"),
    Case("invalid_utf8_form", CUS, b"name=\xff\xfe"),
    Case("invalid_utf8_json", CUS, b'{"name": "\xff"}', JSON),
    Case("percent_escaped_invalid_utf8", CUS, b"name=%ff%fe"),
    Case("percent_escaped_truncated_utf8", CUS, b"description=caf%C3"),
    Case("nul_in_name", CUS, b"name=a%00b", param="name"),
    # 1001 parameters
    Case("1001_parameters", CUS, "&".join(f"k{i}=1" for i in range(1001)).encode()),
    Case("1001_array_items", CUS, "&".join(f"expand[{i}]=a" for i in range(1001)).encode()),
    Case(
        "query_and_body_both",
        CUS + "?email=a%40example.com",
        b"email=b%40example.com",
        param="email",
    ),
]

WRONG_TYPES: list[Case] = [
    Case("amount_abc", PI, OK_PI + b"amount=abc", code="parameter_invalid_integer", param="amount"),
    Case(
        "amount_decimal",
        PI,
        OK_PI + b"amount=12.5",
        code="parameter_invalid_integer",
        param="amount",
    ),
    Case(
        "amount_true", PI, OK_PI + b"amount=true", code="parameter_invalid_integer", param="amount"
    ),
    Case("amount_hex", PI, OK_PI + b"amount=0x10", param="amount"),
    Case("amount_spaces", PI, OK_PI + b"amount=+100", param="amount"),
    Case("amount_empty", PI, OK_PI + b"amount=", code="parameter_missing", param="amount"),
    Case("amount_missing", PI, b"currency=usd", code="parameter_missing", param="amount"),
    Case("amount_as_array", PI, OK_PI + b"amount[0]=100", param="amount"),
    Case("amount_as_hash", PI, OK_PI + b"amount[a]=100", param="amount"),
    Case("confirm_maybe", PI, OK_PI + b"amount=100&confirm=maybe", param="confirm"),
    Case(
        "capture_method_unknown",
        PI,
        OK_PI + b"amount=100&capture_method=later",
        param="capture_method",
    ),
    Case("metadata_string", CUS, b"metadata=abc", param="metadata"),
    Case("metadata_array", CUS, b"metadata[0]=abc", param="metadata"),
    Case("customer_not_an_id", PI, OK_PI + b"amount=100&customer=cus%20x%21", param="customer"),
    Case(
        "pm_types_unknown",
        PI,
        OK_PI + b"amount=100&payment_method_types[0]=paypal",
        param="payment_method_types[0]",
    ),
    Case("currency_as_array", PI, b"amount=100&currency[0]=usd", param="currency"),
    Case("email_invalid", CUS, b"email=not-an-email", code="email_invalid", param="email"),
    Case("email_with_nul", CUS, b"email=a%00b%40example.com", param="email"),
    Case("address_not_hash", CUS, b"address=Main+Street", param="address"),
    Case(
        "return_url_without_confirm",
        PI,
        OK_PI + b"amount=100&payment_method=pm_card_visa&return_url=https%3A%2F%2Fx.example",
        param="return_url",
    ),
    Case(
        "confirm_on_create_without_payment_method",
        PI,
        OK_PI + b"amount=100&confirm=true",
        code="payment_intent_unexpected_state",
    ),
    Case(
        "webhook_url_not_http",
        "/v1/webhook_endpoints",
        b"url=ftp%3A%2F%2Fexample.com&enabled_events[0]=*",
        param="url",
    ),
    Case(
        "webhook_unknown_event_type",
        "/v1/webhook_endpoints",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&enabled_events[0]=no.such_event",
        param="enabled_events",
    ),
    Case(
        "webhook_no_events",
        "/v1/webhook_endpoints",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook",
        code="parameter_missing",
        param="enabled_events",
    ),
    Case("limit_zero", CUS + "?limit=0", b"", method="GET", param="limit"),
    Case("limit_101", CUS + "?limit=101", b"", method="GET", param="limit"),
    Case("limit_abc", CUS + "?limit=abc", b"", method="GET", param="limit"),
    Case(
        "cursor_not_an_id", CUS + "?starting_after=a%2Fb", b"", method="GET", param="starting_after"
    ),
    Case("both_cursors", CUS + "?starting_after=cus_a&ending_before=cus_b", b"", method="GET"),
    Case("email_filter_with_nul", CUS + "?email=a%00b%40example.com", b"", method="GET"),
    Case("created_gt_abc", CUS + "?created[gt]=abc", b"", method="GET", param="created[gt]"),
    Case("created_negative", CUS + "?created[gte]=-1", b"", method="GET", param="created[gte]"),
]

HUGE: list[Case] = [
    Case("amount_1e20", PI, OK_PI + b"amount=" + str(10**20).encode(), param="amount"),
    Case(
        "amount_100000000", PI, OK_PI + b"amount=100000000", code="amount_too_large", param="amount"
    ),
    Case("amount_19_digits", PI, OK_PI + b"amount=9999999999999999999", param="amount"),
    Case(
        "pi_description_5001",
        PI,
        OK_PI + b"amount=100&description=" + b"d" * 5001,
        param="description",
    ),
    Case("customer_description_5001", CUS, b"description=" + b"d" * 5001, param="description"),
    Case(
        "webhook_description_5001",
        "/v1/webhook_endpoints",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&enabled_events[0]=*&description=" + b"d" * 5001,
        param="description",
    ),
    Case(
        "metadata_51_keys",
        CUS,
        "&".join(f"metadata[k{i}]=v" for i in range(51)).encode(),
        param="metadata",
    ),
    Case("metadata_key_41", CUS, b"metadata[" + b"k" * 41 + b"]=v"),
    Case("metadata_value_501", CUS, b"metadata[k]=" + b"v" * 501, param="metadata[k]"),
    Case("negative_amount", PI, OK_PI + b"amount=-1", code="amount_too_small", param="amount"),
    Case("zero_amount", PI, OK_PI + b"amount=0", code="amount_too_small", param="amount"),
    Case("minus_zero_amount", PI, OK_PI + b"amount=-0", code="amount_too_small", param="amount"),
    Case("negative_refund_amount", "/v1/refunds", b"payment_intent=pi_x&amount=-5", param="amount"),
    Case("currency_xyz", PI, b"amount=100&currency=xyz", param="currency"),
    Case("currency_US", PI, b"amount=100&currency=US", param="currency"),
    Case("currency_empty", PI, b"amount=100&currency=", code="parameter_missing", param="currency"),
    Case("currency_missing", PI, b"amount=100", code="parameter_missing", param="currency"),
    Case("currency_long", PI, b"amount=100&currency=" + b"u" * 300, param="currency"),
]

UNKNOWN_PARAMS: list[Case] = [
    Case(
        "foo",
        CUS,
        b"foo=bar",
        code="parameter_unknown",
        param="foo",
        message="Received unknown parameter: foo",
    ),
    Case(
        "foo_on_pi",
        PI,
        OK_PI + b"amount=100&foo=bar",
        code="parameter_unknown",
        param="foo",
        message="Received unknown parameter: foo",
    ),
    Case("nested_metadata", CUS, b"metadata[a][b]=1", param="metadata[a]"),
    Case(
        "address_foo",
        CUS,
        b"address[foo]=x",
        code="parameter_unknown",
        param="address[foo]",
        message="Received unknown parameter: address[foo]",
    ),
    Case(
        "foo_in_query",
        CUS + "?foo=1",
        b"",
        method="GET",
        code="parameter_unknown",
        param="foo",
        message="Received unknown parameter: foo",
    ),
    Case(
        "json_foo",
        CUS,
        b'{"foo": "bar"}',
        JSON,
        code="parameter_unknown",
        param="foo",
        message="Received unknown parameter: foo",
    ),
]


# -------------------------------------------------------------------- fixtures
@pytest.fixture
def key(merchant: Merchant) -> str:
    return merchant.secret_key


def _case_ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


@pytest.mark.parametrize(
    "case",
    MALFORMED + WRONG_TYPES + HUGE + UNKNOWN_PARAMS,
    ids=_case_ids(MALFORMED + WRONG_TYPES + HUGE + UNKNOWN_PARAMS),
)
def test_bad_request_is_a_clean_4xx_that_changes_nothing(
    case: Case, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    r = send(client, case.method, case.path, case.body or None, ctype=case.ctype, key=key)
    assert_error(r, case.status, case.code, case.param, case.message)
    assert counts(gateway) == before
    # With an Idempotency-Key the outcome is the same and nothing of the domain changes
    # (whether the key itself is consumed is tested below).
    if case.method == "POST":
        r2 = send(
            client,
            "POST",
            case.path,
            case.body,
            ctype=case.ctype,
            key=key,
            headers={"Idempotency-Key": f"bad-{case.id}"},
        )
        assert r2.status_code == r.status_code
        assert "Idempotent-Replayed" not in r2.headers
        after = counts(gateway)
        del after["idempotency_keys"], before["idempotency_keys"]
        assert after == before


IDEM_RETRIES: list[tuple[str, str, bytes, bytes]] = [
    # (id, path, rejected body, corrected body)
    ("spec_bad_amount", PI, OK_PI + b"amount=abc", OK_PI + b"amount=100"),
    ("spec_unknown_param", CUS, b"foo=bar", b"name=x"),
    (
        "return_url_without_confirm",
        PI,
        OK_PI + b"amount=100&return_url=https%3A%2F%2Fx.example",
        OK_PI + b"amount=100",
    ),
    (
        "webhook_url_not_http",
        "/v1/webhook_endpoints",
        b"url=ftp%3A%2F%2Fexample.com&enabled_events[0]=*",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&enabled_events[0]=*",
    ),
    (
        "webhook_unknown_event_type",
        "/v1/webhook_endpoints",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&enabled_events[0]=no.such_event",
        b"url=http%3A%2F%2F127.0.0.1%3A9%2Fhook&enabled_events[0]=*",
    ),
]


@pytest.mark.parametrize(
    ("path", "bad", "good"), [c[1:] for c in IDEM_RETRIES], ids=[c[0] for c in IDEM_RETRIES]
)
def test_rejected_parameters_do_not_consume_the_idempotency_key(
    path: str, bad: bytes, good: bytes, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    """Stripe: if incoming parameters failed validation, no idempotent result is saved,
    so the client may fix the request and retry with the same key."""
    before = counts(gateway)
    headers = {"Idempotency-Key": "fix-and-retry"}
    r = send(client, "POST", path, bad, key=key, headers=headers)
    assert_error(r, 400)
    assert counts(gateway) == before
    r = send(client, "POST", path, good, key=key, headers=headers)
    assert r.status_code == 200, r.text
    assert "Idempotent-Replayed" not in r.headers


def test_nul_in_metadata_is_refused_or_round_trips(
    client: httpx.Client, gateway: Gateway, key: str
) -> None:
    r = send(client, "POST", CUS, b"metadata[a]=x%00y&metadata[b%00]=z", key=key)
    if r.status_code == 200:
        c = send(client, "GET", f"{CUS}/{r.json()['id']}", key=key).json()
        assert c["metadata"] == {"a": "x\x00y", "b\x00": "z"}
    else:
        assert_error(r, 400)


LIST_ENDPOINTS = [ep for ep in ENDPOINTS if ep.method == "GET" and "created" in ep.spec]


@pytest.mark.parametrize("ep", LIST_ENDPOINTS, ids=[f"{e.method} {e.path}" for e in LIST_ENDPOINTS])
@pytest.mark.parametrize(
    "value", ["9223372036854775808", "9999999999999999999", "-9999999999999999999"]
)
def test_list_created_filter_beyond_64_bits(
    ep: Endpoint, value: str, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    """A number the database cannot hold is the caller's error, not the server's."""
    cus = send(client, "POST", CUS, b"name=x", key=key).json()["id"]
    before = counts(gateway)
    for op in ("gt", "gte", "lt", "lte"):
        query = f"created[{op}]={value}"
        if ep.path == "/v1/payment_methods":
            query += f"&customer={cus}"
        r = send(client, "GET", ep.path.format(id=cus) + "?" + query, key=key)
        if r.status_code == 200:
            assert r.json()["data"] == []
        else:
            assert_error(r, 400)
    assert counts(gateway) == before


# ------------------------------------------------------------------ body size
@pytest.mark.parametrize("with_length", [True, False], ids=["content_length", "chunked"])
@pytest.mark.parametrize("authenticated", [True, False], ids=["key", "no_key"])
def test_oversized_body_is_413(
    with_length: bool, authenticated: bool, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    limit = gateway.settings.max_body_bytes
    payload = b"description=" + b"a" * (limit + 10)
    before = counts(gateway)
    headers = {"Content-Type": FORM}
    if authenticated:
        headers["Authorization"] = f"Bearer {key}"
    if with_length:
        r = client.post(CUS, content=payload, headers=headers)
        assert r.request.headers["Content-Length"] == str(len(payload))
    else:

        def chunks() -> Iterator[bytes]:
            for i in range(0, len(payload), 4096):
                yield payload[i : i + 4096]

        r = client.post(CUS, content=chunks(), headers=headers)
        assert "Content-Length" not in r.request.headers
        assert r.request.headers["Transfer-Encoding"] == "chunked"
    check_sane(r)
    assert_error(r, 413, "request_too_large")
    assert counts(gateway) == before


def test_body_exactly_at_the_limit_is_not_refused_for_size(
    client: httpx.Client, gateway: Gateway, key: str
) -> None:
    gateway.settings.max_body_bytes = 4096
    body = b"name=n&metadata[k]=" + b"v" * 400
    r = send(client, "POST", CUS, body + b"&description=" + b"d" * (4096 - len(body) - 13), key=key)
    assert r.status_code == 400  # description too long, but not refused for size
    assert r.json()["error"]["param"] == "description"
    r = send(client, "POST", CUS, b"name=n&x=" + b"y" * 4096, key=key)
    assert_error(r, 413, "request_too_large")


def test_oversized_query_string_is_413(client: httpx.Client, gateway: Gateway, key: str) -> None:
    gateway.settings.max_body_bytes = 2048
    r = send(client, "GET", f"{CUS}?email=" + "a" * 3000, key=key)
    assert_error(r, 413, "request_too_large")


# --------------------------------------------------------------- raw card data
RAW_CARD: list[tuple[str, str, bytes, str]] = [
    (
        "pm_form",
        "/v1/payment_methods",
        f"type=card&card[number]={PAN}&card[exp_month]=12&card[exp_year]=2034&card[cvc]=123".encode(),
        FORM,
    ),
    (
        "pm_form_number_only",
        "/v1/payment_methods",
        f"type=card&card[number]={PAN}".encode(),
        FORM,
    ),
    (
        "pi_payment_method_data",
        "/v1/payment_intents",
        f"amount=1000&currency=usd&payment_method_data[type]=card"
        f"&payment_method_data[card][number]={PAN}&payment_method_data[card][cvc]=123".encode(),
        FORM,
    ),
    (
        "pi_confirm_true",
        "/v1/payment_intents",
        f"amount=1000&currency=usd&confirm=true&payment_method_data[card][number]={PAN}".encode(),
        FORM,
    ),
    (
        "pm_json",
        "/v1/payment_methods",
        json.dumps({"type": "card", "card": {"number": PAN2, "cvc": "123"}}).encode(),
        JSON,
    ),
    (
        "customer_source",
        "/v1/customers",
        f"source[object]=card&source[number]={PAN}".encode(),
        FORM,
    ),
    (
        "pm_list_query",
        f"/v1/payment_methods?card[number]={PAN}",
        b"",
        FORM,
    ),
]


@pytest.mark.parametrize(
    ("path", "body", "ctype"), [c[1:] for c in RAW_CARD], ids=[c[0] for c in RAW_CARD]
)
def test_raw_card_data_is_refused_and_never_stored(
    path: str,
    body: bytes,
    ctype: str,
    client: httpx.Client,
    gateway: Gateway,
    key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A gateway without a card vault (tests/api/test_card_vault.py covers one with).
    monkeypatch.setattr(gateway, "vault", None)
    before = counts(gateway)
    method = "GET" if not body else "POST"
    for headers in ({}, {"Idempotency-Key": "raw-card-1"}):
        r = send(client, method, path, body or None, ctype=ctype, key=key, headers=headers)
        # Card data in a URL is refused as such, before anything else.
        assert_error(r, 400, "card_data_in_url" if "?" in path else "raw_card_data_not_enabled")
        for pan in (PAN, PAN2):
            assert pan not in r.text
            assert pan[-8:] not in r.text
    assert counts(gateway) == before
    # Without a key it is a 401 (recorded as a security event), and the number is
    # not echoed either.
    r = send(client, method, path, body or None, ctype=ctype)
    assert_error(r, 400 if "?" in path else 401)
    assert PAN not in r.text and PAN2 not in r.text
    text = dump_db_text(gateway)
    assert PAN not in text and PAN2 not in text
    if gateway.db.is_sqlite:
        files = db_files(gateway)
        assert files, "the SQLite database file must exist"
        for f in files:
            data = f.read_bytes()
            for pan in (PAN, PAN2):
                assert pan.encode() not in data, f
                assert pan.encode("utf-16-le") not in data, f


@pytest.mark.parametrize(
    "body",
    [
        f"card[number]{PAN}",  # a name without "=": the whole pair is the name
        f"card[number]{PAN}[]=1",
        f"amount={PAN}&currency=usd",  # a number in the wrong field
        f"amount=1000&currency=usd&metadata[{PAN}]=x&metadata[{PAN}]=y",
        f"{PAN}=1",
    ],
)
def test_malformed_or_misplaced_card_numbers_are_never_echoed(
    body: str, client: httpx.Client, key: str
) -> None:
    for path in ("/v1/payment_intents", "/v1/customers"):
        r = send(client, "POST", path, body.encode(), ctype=FORM, key=key)
        assert 400 <= r.status_code < 500, r.text
        assert PAN not in r.text and PAN[:12] not in r.text, r.text


def test_card_data_in_the_query_string_of_a_post_is_refused(
    client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    body = b"type=card&card[exp_month]=12&card[exp_year]=2034"
    r = send(client, "POST", f"/v1/payment_methods?card[number]={PAN}", body, ctype=FORM, key=key)
    assert_error(r, 400, "card_data_in_url")
    assert PAN not in r.text
    assert counts(gateway) == before


def test_card_number_in_an_id_is_not_echoed(client: httpx.Client, key: str) -> None:
    for path in (f"{CUS}/{PAN}", f"/v1/payment_intents/pi_{PAN}", f"/v1/charges/ch_{PAN}x"):
        r = send(client, "GET", path, key=key)
        assert_error(r, 404, "resource_missing")
        assert PAN not in r.text


# ------------------------------------------------------- wrong state transitions
def _post(client: httpx.Client, key: str, path: str, data: dict[str, Any] | None = None) -> Any:
    r = send(client, "POST", path, data or {}, key=key)
    assert r.status_code == 200, r.text
    return r.json()


def _pi(client: httpx.Client, key: str, pi_id: str) -> dict[str, Any]:
    r = send(client, "GET", f"/v1/payment_intents/{pi_id}", key=key)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@dataclass
class Objects:
    customer: str
    pi_new: str  # requires_payment_method
    pi_succeeded: str
    pi_canceled: str
    pi_capturable: str
    charge: str
    pm_free: str


@pytest.fixture
def objects(client: httpx.Client, key: str) -> Objects:
    cus = _post(client, key, CUS, {"email": "s@example.com"})
    new = _post(client, key, PI, {"amount": 1000, "currency": "usd"})
    done = _post(
        client,
        key,
        PI,
        {"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True},
    )
    assert done["status"] == "succeeded"
    canceled = _post(client, key, PI, {"amount": 700, "currency": "usd"})
    canceled = _post(client, key, f"{PI}/{canceled['id']}/cancel")
    assert canceled["status"] == "canceled"
    cap = _post(
        client,
        key,
        PI,
        {
            "amount": 1500,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
        },
    )
    assert cap["status"] == "requires_capture"
    pm = _post(client, key, "/v1/payment_methods", {"type": "card", "card": {"token": "tok_visa"}})
    return Objects(
        cus["id"], new["id"], done["id"], canceled["id"], cap["id"], done["latest_charge"], pm["id"]
    )


TRANSITIONS: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    # (id, object attr, path template, params, status, code)
    (
        "capture_requires_payment_method",
        "pi_new",
        PI + "/{}/capture",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "capture_succeeded",
        "pi_succeeded",
        PI + "/{}/capture",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "capture_more_than_capturable",
        "pi_capturable",
        PI + "/{}/capture",
        {"amount_to_capture": 1501},
        400,
        "amount_too_large",
    ),
    (
        "capture_zero",
        "pi_capturable",
        PI + "/{}/capture",
        {"amount_to_capture": 0},
        400,
        "amount_too_small",
    ),
    (
        "confirm_succeeded",
        "pi_succeeded",
        PI + "/{}/confirm",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "confirm_canceled",
        "pi_canceled",
        PI + "/{}/confirm",
        {"payment_method": "pm_card_visa"},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "confirm_without_payment_method",
        "pi_new",
        PI + "/{}/confirm",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "confirm_bad_return_url",
        "pi_new",
        PI + "/{}/confirm",
        {"payment_method": "pm_card_visa", "return_url": "u" * 3000},
        400,
        None,
    ),
    (
        "confirm_unknown_pm",
        "pi_new",
        PI + "/{}/confirm",
        {"payment_method": "pm_nope"},
        404,
        "resource_missing",
    ),
    (
        "cancel_succeeded",
        "pi_succeeded",
        PI + "/{}/cancel",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "cancel_canceled",
        "pi_canceled",
        PI + "/{}/cancel",
        {},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "update_canceled",
        "pi_canceled",
        PI + "/{}",
        {"amount": 5},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "update_succeeded_amount",
        "pi_succeeded",
        PI + "/{}",
        {"amount": 5},
        400,
        "payment_intent_unexpected_state",
    ),
    (
        "refund_more_than_captured",
        "pi_succeeded",
        "/v1/refunds",
        {"payment_intent": "{}", "amount": 2001},
        400,
        "amount_too_large",
    ),
    (
        "refund_uncaptured",
        "pi_capturable",
        "/v1/refunds",
        {"payment_intent": "{}"},
        400,
        "charge_not_refundable",
    ),
    (
        "refund_unconfirmed",
        "pi_new",
        "/v1/refunds",
        {"payment_intent": "{}"},
        400,
        "charge_not_refundable",
    ),
    (
        "refund_charge_more_than_captured",
        "charge",
        "/v1/refunds",
        {"charge": "{}", "amount": 999999},
        400,
        "amount_too_large",
    ),
    (
        "detach_unattached",
        "pm_free",
        "/v1/payment_methods/{}/detach",
        {},
        400,
        "payment_method_unexpected_state",
    ),
    (
        "update_unattached_pm",
        "pm_free",
        "/v1/payment_methods/{}",
        {"metadata": {"a": "b"}},
        400,
        None,
    ),
    (
        "attach_to_missing_customer",
        "pm_free",
        "/v1/payment_methods/{}/attach",
        {"customer": "cus_doesnotexist"},
        404,
        "resource_missing",
    ),
]


@pytest.mark.parametrize(
    ("attr", "path", "params", "status", "code"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_wrong_state_transition_changes_nothing(
    attr: str,
    path: str,
    params: dict[str, Any],
    status: int,
    code: str | None,
    client: httpx.Client,
    gateway: Gateway,
    key: str,
    objects: Objects,
) -> None:
    obj = getattr(objects, attr)
    params = {k: (v.format(obj) if isinstance(v, str) else v) for k, v in params.items()}
    intents = [objects.pi_new, objects.pi_succeeded, objects.pi_canceled, objects.pi_capturable]
    before_rows = counts(gateway)
    before = {pi: _pi(client, key, pi) for pi in intents}
    before_charge = send(client, "GET", f"/v1/charges/{objects.charge}", key=key).json()
    before_pm = send(client, "GET", f"/v1/payment_methods/{objects.pm_free}", key=key).json()
    r = send(client, "POST", path.format(obj), params, key=key)
    assert_error(r, status, code)
    assert counts(gateway) == before_rows
    assert {pi: _pi(client, key, pi) for pi in intents} == before
    assert send(client, "GET", f"/v1/charges/{objects.charge}", key=key).json() == before_charge
    pm_after = send(client, "GET", f"/v1/payment_methods/{objects.pm_free}", key=key).json()
    assert pm_after == before_pm


# ------------------------------------------------------------------ unknown ids
def _filler(ep: Endpoint) -> dict[str, Any]:
    """Values for an endpoint's required parameters (so the lookup is what fails)."""
    out: dict[str, Any] = {}
    for name, p in ep.spec.items():
        if not p.required:
            continue
        out[name] = {
            "id": "cus_doesnotexist",
            "amount": 100,
            "int": p.min or 1,
            "currency": "usd",
            "bool": "true",
            "enum": p.choices[0] if p.choices else "x",
            "list": ["*"],
        }.get(p.kind, "x")
    if ep.path.startswith("/v1/webhook_endpoints") and "url" in out:
        out["url"] = "http://127.0.0.1:9/hook"
    return out


ID_ENDPOINTS = [ep for ep in ENDPOINTS if "{id}" in ep.path]


@pytest.mark.parametrize("ep", ID_ENDPOINTS, ids=[f"{e.method} {e.path}" for e in ID_ENDPOINTS])
def test_unknown_id_is_404_resource_missing(
    ep: Endpoint, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    params = _filler(ep)
    well_formed = ("zz_doesnotexist", "x" * 128, "cus_" + "A" * 60)
    # Not even shaped like an id: a 404, or a 400 naming the id; never a 5xx.
    malformed = ("x" * 300, "cus%00x", "cus%FFx", "%20", "cus.x", "cus-x")
    for obj in well_formed + malformed:
        path = ep.path.format(id=obj)
        if ep.method == "POST":
            r = send(client, "POST", path, params, key=key)
        else:
            r = send(client, ep.method, path, key=key)
        if obj in well_formed or r.status_code == 404:
            assert_error(r, 404, "resource_missing")
        else:
            assert_error(r, 400, "resource_missing")
    assert counts(gateway) == before


# ------------------------------------------------------- unknown URL and method
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("POST", "/v1/nope"),
        ("GET", "/v1/customers/cus_x/nope"),
        ("GET", "/v2/customers"),
        ("GET", "/nope"),
        ("DELETE", "/v1/payment_intents/pi_x/confirm/extra"),
    ],
)
def test_unknown_url_is_a_stripe_404(
    method: str, path: str, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    r = send(client, method, path, b"a=1" if method == "POST" else None, key=key)
    err = assert_error(r, 404)
    assert err["type"] == "invalid_request_error"
    assert "Unrecognized request URL" in err["message"]
    assert counts(gateway) == before


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/customers"),
        ("PATCH", "/v1/customers/cus_x"),
        ("DELETE", "/v1/payment_intents"),
        ("POST", "/v1/charges/ch_x"),
        ("GET", "/v1/payment_intents/pi_x/confirm"),
        ("DELETE", "/v1/events/evt_x"),
    ],
)
def test_wrong_method_is_a_stripe_405(
    method: str, path: str, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    r = send(client, method, path, b"a=1" if method in ("PUT", "PATCH", "POST") else None, key=key)
    err = assert_error(r, 405)
    assert err["type"] == "invalid_request_error"
    assert "Unrecognized request URL" in err["message"]
    assert counts(gateway) == before


# --------------------------------------------------------------- idempotency key
@pytest.mark.parametrize("idem", ["k" * 256, "k" * 1000, "tab\there"], ids=["256", "1000", "tab"])
def test_bad_idempotency_key_is_400(
    idem: str, client: httpx.Client, gateway: Gateway, key: str
) -> None:
    before = counts(gateway)
    r = send(
        client, "POST", CUS, b"email=a%40example.com", key=key, headers={"Idempotency-Key": idem}
    )
    err = assert_error(r, 400)
    assert err.get("param") == "Idempotency-Key"
    assert counts(gateway) == before


def test_idempotency_key_of_255_is_fine(client: httpx.Client, gateway: Gateway, key: str) -> None:
    r = send(
        client,
        "POST",
        CUS,
        b"email=a%40example.com",
        key=key,
        headers={"Idempotency-Key": "k" * 255},
    )
    assert r.status_code == 200, r.text
    assert counts(gateway)["customers"] == 1


# ---------------------------------------------------------------- properties
FORM_TOKENS = st.sampled_from(
    [
        *"[]%&=+;#?/._-~ \t\n\\\"'{}0123456789abcdefxyzAF",
        *("\x00", "é", "€", "\ufffd", "\U0001f600"),
        *("%00", "%ff", "%C3", "%5B", "%5D", "%26", "%3D", "%25", "%2"),
        *("amount", "currency", "metadata", "expand", "card", "number", "usd", "pm_card_visa"),
    ]
)
FORM_TEXT = st.lists(FORM_TOKENS, max_size=40).map("".join)
FIELDS = st.sampled_from(
    [
        "amount",
        "currency",
        "confirm",
        "customer",
        "payment_method",
        "metadata",
        "metadata[a]",
        "metadata[a][b]",
        "expand[]",
        "expand[0]",
        "expand[1]",
        "address[city]",
        "address",
        "email",
        "name",
        "description",
        "capture_method",
        "payment_method_types[0]",
        "automatic_payment_methods[enabled]",
        "card[number]",
        "foo",
        "limit",
        "a[",
        "]",
        "",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            "usd",
            "100",
            "-1",
            "0",
            "true",
            "maybe",
            "pm_card_visa",
            "tok_visa",
            "a@example.com",
            "12.5",
            "1e3",
            "99999999999999999999",
        ]
    ),
    st.text(max_size=30),
)


@st.composite
def structured_forms(draw: st.DrawFn) -> str:
    pairs = draw(st.lists(st.tuples(FIELDS, VALUES), max_size=8))
    return "&".join(f"{quote(k, safe='[]')}={quote(v)}" for k, v in pairs)


FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@FUZZ
@given(
    path=st.sampled_from([CUS, PI]),
    body=st.one_of(FORM_TEXT, st.text(max_size=120)),
)
def test_random_form_bodies_never_5xx(path: str, body: str, client: httpx.Client, key: str) -> None:
    r = send(client, "POST", path, body.encode(), key=key)
    if r.status_code != 200:
        assert_error(r, r.status_code)
        assert 400 <= r.status_code < 500


@FUZZ
@given(path=st.sampled_from([CUS, PI]), body=structured_forms())
def test_structured_random_forms_never_5xx(
    path: str, body: str, client: httpx.Client, key: str
) -> None:
    r = send(client, "POST", path, body, key=key)
    if r.status_code != 200:
        assert_error(r, r.status_code)
        assert 400 <= r.status_code < 500


@FUZZ
@given(path=st.sampled_from([CUS, PI]), body=st.binary(max_size=120))
def test_random_bytes_never_5xx(path: str, body: bytes, client: httpx.Client, key: str) -> None:
    for ctype in (FORM, JSON):
        r = send(client, "POST", path, body, ctype=ctype, key=key)
        if r.status_code != 200:
            assert_error(r, r.status_code)
