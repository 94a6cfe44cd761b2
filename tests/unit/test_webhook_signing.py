"""Webhook signatures: our header must satisfy the official Stripe SDK's verifier."""

from __future__ import annotations

import json
import re
import time

import pytest
import stripe
from hypothesis import given, settings
from hypothesis import strategies as st

from paywarden.webhooks.signing import (
    SignatureVerificationError,
    compute_signature,
    generate_secret,
    signature_header,
    verify_header,
)

HEADER_RE = re.compile(r"^t=\d+(,v1=[0-9a-f]{64})+$")


def _event_payload(**extra: object) -> bytes:
    body: dict[str, object] = {
        "id": "evt_123",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {}},
    }
    body.update(extra)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_generate_secret_shape_and_uniqueness() -> None:
    secrets = {generate_secret() for _ in range(200)}
    assert len(secrets) == 200
    for s in secrets:
        assert re.fullmatch(r"whsec_[0-9A-Za-z]{43}", s)


def test_header_format_one_signature_per_secret() -> None:
    payload = _event_payload()
    one = signature_header(payload, ["whsec_a"], 1_700_000_000)
    assert HEADER_RE.match(one)
    assert one.startswith("t=1700000000,v1=")
    assert one.count("v1=") == 1
    two = signature_header(payload, ["whsec_a", "whsec_b"], 1_700_000_000)
    assert HEADER_RE.match(two)
    assert two.split(",")[1:] == [
        "v1=" + compute_signature(payload, "whsec_a", 1_700_000_000),
        "v1=" + compute_signature(payload, "whsec_b", 1_700_000_000),
    ]


def test_header_requires_a_secret() -> None:
    with pytest.raises(ValueError):
        signature_header(b"{}", [], 1)


def test_sdk_accepts_our_header() -> None:
    secret = generate_secret()
    payload = _event_payload(livemode=False, note="Zoë ✓")
    header = signature_header(payload, [secret], int(time.time()))
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event.id == "evt_123"
    assert event.type == "customer.created"


def test_roll_signs_with_both_and_sdk_accepts_either() -> None:
    new, old = generate_secret(), generate_secret()
    payload = _event_payload()
    header = signature_header(payload, [new, old], int(time.time()))
    assert stripe.Webhook.construct_event(payload, header, new).id == "evt_123"
    assert stripe.Webhook.construct_event(payload, header, old).id == "evt_123"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, generate_secret())


def test_tampered_body_fails() -> None:
    secret = generate_secret()
    payload = _event_payload()
    now = int(time.time())
    header = signature_header(payload, [secret], now)
    tampered = payload.replace(b"customer.created", b"customer.deleted")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, secret)
    with pytest.raises(SignatureVerificationError):
        verify_header(tampered, header, secret, 300, now)


def test_tampered_timestamp_fails() -> None:
    secret = generate_secret()
    payload = _event_payload()
    now = int(time.time())
    header = signature_header(payload, [secret], now)
    moved = header.replace(f"t={now}", f"t={now + 1}")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, moved, secret)
    with pytest.raises(SignatureVerificationError):
        verify_header(payload, moved, secret, 300, now)


def test_stale_timestamp_fails() -> None:
    secret = generate_secret()
    payload = _event_payload()
    old = int(time.time()) - 1000
    header = signature_header(payload, [secret], old)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, secret, tolerance=300)
    with pytest.raises(SignatureVerificationError):
        verify_header(payload, header, secret, 300, old + 301)
    with pytest.raises(SignatureVerificationError):  # far future is refused too
        verify_header(payload, header, secret, 300, old - 301)
    assert verify_header(payload, header, secret, 300, old + 300) == old


def test_verify_accepts_sdk_generated_header() -> None:
    secret = generate_secret()
    payload = _event_payload()
    now = int(time.time())
    sig = stripe.WebhookSignature._compute_signature(f"{now}.{payload.decode()}", secret)
    header = f"t={now},v0=deadbeef,v1={sig}"
    assert verify_header(payload, header, secret, 300, now) == now


@pytest.mark.parametrize(
    "header",
    [
        "",
        "v1=abc",
        "t=123",
        "t=abc,v1=00",
        "t=1,t=1,v1=00",
        "t=-5,v1=00",
        "garbage",
        "t=1," + "v1=0," * 3000,
    ],
)
def test_verify_rejects_malformed_headers(header: str) -> None:
    with pytest.raises(SignatureVerificationError):
        verify_header(b"{}", header, "whsec_x", 300, 1)


def test_verify_rejects_non_ascii_candidate_without_crashing() -> None:
    with pytest.raises(SignatureVerificationError):
        verify_header(b"{}", "t=1,v1=é", "whsec_x", 300, 1)


@settings(max_examples=60, deadline=None, database=None)
@given(
    payload=st.binary(max_size=2048),
    secrets=st.lists(st.text(min_size=1, max_size=64), min_size=1, max_size=3),
    timestamp=st.integers(min_value=0, max_value=2**40),
)
def test_round_trip_property(payload: bytes, secrets: list[str], timestamp: int) -> None:
    header = signature_header(payload, secrets, timestamp)
    assert HEADER_RE.match(header)
    for secret in secrets:
        assert verify_header(payload, header, secret, 5, timestamp) == timestamp
    if payload:
        flipped = bytes([payload[0] ^ 1]) + payload[1:]
        with pytest.raises(SignatureVerificationError):
            verify_header(flipped, header, secrets[0], 5, timestamp)


@settings(max_examples=40, deadline=None, database=None)
@given(data=st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=5))
def test_sdk_round_trip_property(data: dict[str, str]) -> None:
    secret = generate_secret()
    payload = _event_payload(data={"object": data})
    header = signature_header(payload, [secret, generate_secret()], int(time.time()))
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event.id == "evt_123"
