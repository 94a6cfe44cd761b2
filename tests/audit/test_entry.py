"""The entry model: canonical leaf bytes, refusals, pseudonyms, the PAN guard."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paywarden.audit import entry as e
from paywarden.audit.errors import AuditEntryError, AuditWriteError
from paywarden.core.secrets import Secret

KEY = b"k" * 32


def _prepare(**kw: Any) -> e.PreparedEntry:
    base: dict[str, Any] = {
        "event": "card.tokenized",
        "outcome": "success",
        "actor": e.Actor.service("gateway"),
    }
    base.update(kw)
    return e.prepare(**base, pseudonym_key=KEY)


def test_finished_bytes_are_the_canonical_json_of_the_whole_entry() -> None:
    p = _prepare(
        origin=e.Origin(ip="203.0.113.9", request_id="req_1"),
        resource=e.Resource("card", "tok_1"),
        account="acct_1",
        reason="because",
        details={"b": [1, 2.5, None, True], "a": {"z": "ü", "y": "line\nbreak"}},
        sensitive={"email": "a@example.com"},
    )
    body = e.finish(p.head, seq=41, service="vault", time="2026-01-02T03:04:05.000006Z")
    decoded = json.loads(body)
    assert decoded["seq"] == 41 and decoded["service"] == "vault" and decoded["v"] == 1
    assert body == e.canonical_json(decoded)
    assert b"\n" not in body  # one entry is one line in an archive
    assert e.seq_tail_matches(body, 41, "vault")
    assert not e.seq_tail_matches(body, 14, "vault")
    assert not e.seq_tail_matches(body, 41, "gateway")
    entry = e.Entry.from_body(body)
    assert entry.seq == 41 and entry.resource == {"type": "card", "id": "tok_1"}
    assert entry.to_json() == decoded


def test_seq_check_is_not_fooled_by_a_nested_seq() -> None:
    p = _prepare(details={"seq": 7, "note": ',"seq":7,"service":"vault","time":"'})
    body = e.finish(p.head, seq=8, service="vault", time="2026-01-02T03:04:05.000006Z")
    assert e.seq_tail_matches(body, 8, "vault")
    assert not e.seq_tail_matches(body, 7, "vault")


def test_sensitive_values_are_stored_only_as_hmac() -> None:
    p = _prepare(sensitive={"email": "alice@example.com", "key_prefix": Secret("sk_test_abc")})
    assert b"alice@example.com" not in p.head and b"sk_test_abc" not in p.head
    stored = json.loads(p.head + b"}")["hmac"]
    expected = hmac.new(KEY, b"email\x00alice@example.com", hashlib.sha256).hexdigest()
    assert stored["email"] == expected
    assert stored["key_prefix"] == e.pseudonym(KEY, "key_prefix", "sk_test_abc")
    # The name is bound in: the same value under another name does not correlate.
    assert e.pseudonym(KEY, "a", "x") != e.pseudonym(KEY, "b", "x")


def test_sensitive_values_need_a_pseudonym_key() -> None:
    with pytest.raises(AuditEntryError):
        e.prepare(
            event="auth.failed",
            outcome="failure",
            actor=e.Actor.anonymous(),
            sensitive={"email": "a@b"},
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"when": datetime.now(UTC)},
        {"amount": Decimal("1.5")},
        {"raw": b"bytes"},
        {"tuple": (1, 2)},
        {"secret": Secret("s")},
        {"nan": float("nan")},
        {"inf": float("inf")},
        {"big": 2**60},
        {1: "int key"},
        {"deep": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]},
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else str(v),
)
def test_values_that_are_not_json_native_are_refused(bad: dict[Any, Any]) -> None:
    with pytest.raises(AuditEntryError):
        _prepare(details=bad)


@pytest.mark.parametrize(
    "field",
    [
        {"details": {"note": "card 4242424242424242 declined"}},
        {"details": {"nested": [{"x": "4242 4242 4242 4242"}]}},
        {"details": {"4000-0566-5566-5556": "as a key"}},
        {"reason": "customer typed 378282246310005 in the name"},
        {"resource": e.Resource("note", "6011111111111117")},
        {"account": "acct_4242424242424242"},
    ],
    ids=["details", "grouped", "key", "reason", "resource", "account"],
)
def test_a_luhn_valid_card_number_anywhere_is_refused(field: dict[str, Any]) -> None:
    with pytest.raises(AuditEntryError) as info:
        _prepare(**field)
    text = str(info.value)
    assert "4242" not in text and "378282" not in text and "6011" not in text
    assert isinstance(info.value, AuditWriteError)  # the caller fails the action


@pytest.mark.parametrize(
    "value",
    [
        "4242424242424241",  # fails Luhn
        "order 123456789012",  # 12 digits
        "12345678901234567890123",  # 23 digits: not a PAN length
        "2026-01-02T03:04:05.123456Z",
        # a digest holding a Luhn-valid 16-digit run (exempt: long hex token)
        "ab4242424242424242cd" + "0" * 44,
    ],
)
def test_ordinary_digits_are_accepted(value: str) -> None:
    _prepare(details={"v": value})


def test_numbers_are_not_scanned_as_card_numbers() -> None:
    # A millisecond timestamp is 13 digits and Luhn-valid one time in ten.
    _prepare(details={"at_ms": 1_700_000_000_006, "n": 4242424242424242 % 2**53})


def test_event_outcome_and_actor_are_validated() -> None:
    with pytest.raises(AuditEntryError):
        _prepare(event="NoDots")
    with pytest.raises(AuditEntryError):
        _prepare(outcome="maybe")
    with pytest.raises(AuditEntryError):
        e.Actor("root", "x")
    with pytest.raises(AuditEntryError):
        _prepare(actor="gateway")


def test_time_format_is_fixed_width_utc() -> None:
    t = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=2)))
    text = e.format_time(t)
    assert text == "2026-03-04T03:06:07.000008Z"
    assert len(text) == e.TIME_LEN
    assert e.parse_time(text) == t
    with pytest.raises(ValueError):
        e.format_time(datetime(2026, 1, 1))  # noqa: DTZ001 - naive on purpose


def test_luhn() -> None:
    assert e.luhn_valid("4242424242424242")
    assert not e.luhn_valid("4242424242424241")
    assert e.looks_like_pan("pan=5555555555554444;")


def test_leaf_bytes_are_unchanged_from_format_v1() -> None:
    # Pinned bytes: logs already stored must keep verifying, and new entries
    # must be byte-identical to what earlier releases wrote for the same input.
    p = e.prepare(
        event="payment_intent.confirmed",
        outcome="failure",
        actor=e.Actor.api_key("key_1"),
        origin=e.Origin(ip="2001:db8::1", request_id="req_1", client_cert="sha256:ab"),
        resource=e.Resource("payment_intent", "pi_1"),
        account="acct_1",
        reason='declined: "insufficient" \u00fc\n',
        details={
            "z": [1, 2.5, None, True, {"b": "x", "a": []}],
            "a": {"\u00e9": "\u2028"},
            "n": -7,
        },
        sensitive={"email": "a@example.com", "key_prefix": "sk_test_1"},
        pseudonym_key=KEY,
    )
    body = e.finish(p.head, seq=123, service="vault", time="2026-01-02T03:04:05.000006Z")
    assert body == p.head + e.tail(123, "vault", "2026-01-02T03:04:05.000006Z")
    assert body.startswith(b'{"account":"acct_1","actor":{"id":"key_1","type":"api_key"},')
    assert body.endswith(
        b',"seq":123,"service":"vault","time":"2026-01-02T03:04:05.000006Z","v":1}'
    )
    assert hashlib.sha256(b"\x00" + body).hexdigest() == (
        "8f0db2c98c5cebc15563cbec7ac9b14236e19dbfc74d2eb191b7203cf739d8d0"
    )


_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
_json = st.recursive(
    _json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json, max_size=6))
def test_the_prebuilt_encoder_writes_exactly_canonical_json(value: dict[str, Any]) -> None:
    try:
        expected = e.canonical_json(value)
    except AuditEntryError:  # a lone surrogate: both refuse it
        with pytest.raises(AuditEntryError):
            e._encode_checked(value)
        return
    assert e._encode_checked(value) == expected


_digits_and_separators = st.lists(
    st.from_regex(r"[0-9]{1,7}", fullmatch=True)
    | st.sampled_from([" ", "-", "  ", "- ", "a", '"', ":", "\u00e9"]),
    max_size=16,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_digits_and_separators)
def test_the_pan_prefilter_never_misses_what_the_exact_test_finds(text: str) -> None:
    # The prefilter only decides whether to run the structural scan: it must
    # be a superset of the exact pattern, or a card number could slip through.
    if e._ANY_13.search(text):
        assert e._may_hold_pan(text.encode("utf-8"))
    else:
        assert not e.looks_like_pan(text)
