"""Idempotency request fingerprints and key checks (paywarden.idempotency.service)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.errors import InvalidRequestError
from paywarden.idempotency.service import MAX_KEY_LENGTH, check_key, fingerprint

PARAMS = {"amount": 100, "currency": "usd", "metadata": {"a": "1", "b": "2"}}


def test_fingerprint_is_sha256_hex_and_deterministic() -> None:
    fp = fingerprint("POST", "/v1/payment_intents", PARAMS)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp == fingerprint("POST", "/v1/payment_intents", dict(PARAMS))


def test_fingerprint_ignores_dict_key_order() -> None:
    a = {"amount": 100, "currency": "usd", "metadata": {"a": "1", "b": "2"}}
    b = {"metadata": {"b": "2", "a": "1"}, "currency": "usd", "amount": 100}
    assert fingerprint("POST", "/v1/x", a) == fingerprint("POST", "/v1/x", b)


def test_fingerprint_differs_by_method() -> None:
    assert fingerprint("POST", "/v1/x", PARAMS) != fingerprint("DELETE", "/v1/x", PARAMS)


def test_fingerprint_differs_by_path() -> None:
    assert fingerprint("POST", "/v1/customers", {}) != fingerprint("POST", "/v1/customers/", {})
    assert fingerprint("POST", "/v1/a/cus_1", {}) != fingerprint("POST", "/v1/a/cus_2", {})


@pytest.mark.parametrize(
    "other",
    [
        {"amount": 101, "currency": "usd", "metadata": {"a": "1", "b": "2"}},
        {"amount": "100", "currency": "usd", "metadata": {"a": "1", "b": "2"}},
        {"amount": 100, "currency": "usd", "metadata": {"a": "1"}},
        {"amount": 100, "currency": "usd", "metadata": {"a": "1", "b": "2"}, "x": None},
        {"amount": 100, "currency": "usd"},
        {},
    ],
)
def test_fingerprint_differs_by_params(other: dict[str, Any]) -> None:
    assert fingerprint("POST", "/v1/x", PARAMS) != fingerprint("POST", "/v1/x", other)


def test_fingerprint_list_order_matters() -> None:
    assert fingerprint("POST", "/p", {"expand": ["a", "b"]}) != fingerprint(
        "POST", "/p", {"expand": ["b", "a"]}
    )


def test_fingerprint_fields_do_not_run_together() -> None:
    # Concatenation ambiguity: ("POST", "/v1/ab") vs ("POST/", "v1/ab") etc.
    assert fingerprint("POST", "/v1/ab", {}) != fingerprint("POST/", "v1/ab", {})
    assert fingerprint("POST", "/x", {"a": "b"}) != fingerprint("POST", "/x", {"a": "b", "": ""})


def test_fingerprint_tolerates_non_json_values() -> None:
    fp = fingerprint("POST", "/x", {"when": object()})
    assert re.fullmatch(r"[0-9a-f]{64}", fp)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=15,
)
_params = st.dictionaries(st.text(max_size=6), _json, max_size=6)


def _reverse_keys(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _reverse_keys(v[k]) for k in reversed(list(v))}
    if isinstance(v, list):
        return [_reverse_keys(x) for x in v]
    return v


@given(_params)
def test_fingerprint_key_order_insensitive_property(params: dict[str, Any]) -> None:
    assert fingerprint("POST", "/v1/x", params) == fingerprint(
        "POST", "/v1/x", _reverse_keys(params)
    )


@given(_params, _params)
def test_fingerprint_distinguishes_distinct_params(p1: dict[str, Any], p2: dict[str, Any]) -> None:
    if p1 == p2 and _same_types(p1, p2):
        assert fingerprint("POST", "/x", p1) == fingerprint("POST", "/x", p2)
    elif p1 != p2:
        assert fingerprint("POST", "/x", p1) != fingerprint("POST", "/x", p2)


def _same_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


# --- check_key ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    ["a", "k" * MAX_KEY_LENGTH, "5f2c-4b1e-uuid", "with space", "ünïcødé", "!@#$%^&*()"],
)
def test_check_key_accepts(key: str) -> None:
    check_key(key)


@pytest.mark.parametrize(
    "key",
    ["", "k" * (MAX_KEY_LENGTH + 1), "a\nb", "tab\there", "nul\x00", "bell\x07", "end\r", "\x7f"],
)
def test_check_key_rejects(key: str) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        check_key(key)
    assert ei.value.message == "Idempotency-Key must be 1 to 255 printable characters."
    assert ei.value.param == "Idempotency-Key"
    assert ei.value.status == 400


def test_max_key_length() -> None:
    assert MAX_KEY_LENGTH == 255


@given(st.text(min_size=1, max_size=MAX_KEY_LENGTH))
def test_check_key_matches_printable_rule(key: str) -> None:
    if key.isprintable():
        check_key(key)
    else:
        with pytest.raises(InvalidRequestError):
            check_key(key)
