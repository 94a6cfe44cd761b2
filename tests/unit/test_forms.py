"""Stripe form decoding and strict JSON decoding (paywarden.http.forms)."""

from __future__ import annotations

import json
import string
from typing import Any, Literal
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stripe._encode import _api_encode

from paywarden.core.errors import InvalidRequestError
from paywarden.http.forms import (
    MAX_DEPTH,
    MAX_KEY_LENGTH,
    MAX_KEYS,
    build_nested,
    decode_form,
    decode_json,
)


def _rejected(body: str) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as ei:
        decode_form(body)
    assert ei.value.code == "parameter_invalid_string"
    assert ei.value.status == 400
    return ei.value


# --- form: the shapes Stripe clients send ------------------------------------


def test_empty_body_is_empty_dict() -> None:
    assert decode_form("") == {}


def test_flat_scalars() -> None:
    assert decode_form("amount=100&currency=usd") == {"amount": "100", "currency": "usd"}


def test_nested_hash() -> None:
    assert decode_form("a[b]=1") == {"a": {"b": "1"}}


def test_nested_hash_two_levels_blank_value() -> None:
    assert decode_form("a[b][c]=") == {"a": {"b": {"c": ""}}}


def test_sibling_keys_merge_into_one_hash() -> None:
    assert decode_form("card[number]=4242&card[exp_month]=12&card[cvc]=") == {
        "card": {"number": "4242", "exp_month": "12", "cvc": ""}
    }


def test_indexed_array() -> None:
    assert decode_form("a[0]=x&a[1]=y") == {"a": ["x", "y"]}


def test_indexed_array_given_out_of_order_is_ordered_by_index() -> None:
    assert decode_form("a[1]=y&a[0]=x") == {"a": ["x", "y"]}


def test_appended_array() -> None:
    assert decode_form("a[]=x&a[]=y") == {"a": ["x", "y"]}


def test_array_of_hashes() -> None:
    body = "items[0][price]=p1&items[0][quantity]=2&items[1][price]=p2"
    assert decode_form(body) == {"items": [{"price": "p1", "quantity": "2"}, {"price": "p2"}]}


def test_array_nested_in_hash() -> None:
    assert decode_form("a[b][0]=x&a[b][1]=y") == {"a": {"b": ["x", "y"]}}


def test_blank_values_are_kept() -> None:
    assert decode_form("description=&metadata[k]=") == {"description": "", "metadata": {"k": ""}}


def test_key_without_equals_is_blank_value() -> None:
    assert decode_form("a") == {"a": ""}


def test_percent_encoding_and_plus_in_values() -> None:
    assert decode_form("q=a+b%2Bc%26d%3De%25") == {"q": "a b+c&d=e%"}


def test_percent_encoded_brackets_in_keys() -> None:
    assert decode_form("a%5Bb%5D=1&c%5B%5D=2") == {"a": {"b": "1"}, "c": ["2"]}


def test_utf8_percent_encoding() -> None:
    assert decode_form("name=J%C3%BCrgen+%E2%82%AC") == {"name": "Jürgen €"}


# --- form: rejected shapes ---------------------------------------------------


def test_duplicate_scalar_rejected() -> None:
    err = _rejected("a=1&a=2")
    assert err.message == "Parameter 'a' was given more than once."


def test_duplicate_nested_key_rejected() -> None:
    err = _rejected("a[b]=1&a[b]=2")
    assert err.message == "Parameter 'a[b]' was given more than once."


def test_duplicate_index_rejected() -> None:
    err = _rejected("a[0]=x&a[0]=y")
    assert "given more than once" in err.message


def test_duplicate_via_percent_encoding_rejected() -> None:
    err = _rejected("a[b]=1&a%5Bb%5D=2")
    assert "given more than once" in err.message


def test_scalar_then_hash_rejected() -> None:
    err = _rejected("a=1&a[b]=2")
    assert err.message == "Parameter 'a[b]' mixes incompatible types."


def test_hash_then_scalar_rejected() -> None:
    err = _rejected("a[b]=2&a=1")
    assert "'a'" in err.message


def test_hash_then_array_rejected() -> None:
    err = _rejected("a[b]=1&a[0]=2")
    assert err.message == "Parameter 'a[0]' mixes incompatible types."


def test_array_then_hash_rejected() -> None:
    err = _rejected("a[0]=1&a[b]=2")
    assert "mixes incompatible types" in err.message


def test_indexed_then_appended_rejected() -> None:
    err = _rejected("a[0]=x&a[]=y")
    assert err.message == "Parameter 'a' mixes array styles."


def test_appended_then_indexed_rejected() -> None:
    err = _rejected("a[]=x&a[0]=y")
    assert "mixes array styles" in err.message


@pytest.mark.parametrize("body", ["a[1]=x", "a[0]=x&a[2]=y", "a[5]=x&a[0]=y&a[1]=z"])
def test_sparse_array_rejected(body: str) -> None:
    err = _rejected(body)
    assert err.message == "Array parameter 'a' must be indexed 0..n-1."


def test_sparse_nested_array_names_full_path() -> None:
    err = _rejected("a[b][0]=x&a[b][2]=y")
    assert err.message == "Array parameter 'a[b]' must be indexed 0..n-1."


def test_append_inside_hash_rejected() -> None:
    # `[]` only makes sense on an array; a hash member cannot be appended to.
    err = _rejected("a[b]=1&a[]=2")
    assert "'a[]'" in err.message


@pytest.mark.parametrize(
    "body",
    ["[a]=1", "a]=1", "a[=1", "a[b=1", "a[b]c=1", "a[b]]=1", "a[[b]]=1", "=1"],
)
def test_malformed_names_rejected(body: str) -> None:
    err = _rejected(body)
    assert err.message.startswith("Invalid parameter name:")


def test_malformed_name_is_clipped_in_message() -> None:
    err = _rejected("x]" + "y" * 150 + "=1")
    assert len(err.message) < 100


def test_trailing_newline_in_name_is_not_an_alias() -> None:
    # `a[b]\n` is not a valid parameter name and must not silently become `a[b]`.
    _rejected("a%5Bb%5D%0A=1")


@pytest.mark.parametrize("body", ["a[0]=x&a[01]=y", "a[0]=x&a[1]=y&a[002]=z"])
def test_non_canonical_indices_fail_cleanly(body: str) -> None:
    # A client error, never an unhandled KeyError (which the API turns into a 500).
    _rejected(body)


@pytest.mark.parametrize(
    ("index", "key"),
    [("00", "00"), ("%C2%B2", "²"), ("%D9%A0", "\u0660"), ("%EF%BC%90", "\uff10")],
)
def test_non_canonical_digit_keys_are_hash_keys(index: str, key: str) -> None:
    # Only canonical ASCII decimals index an array; anything else is a hash key
    # (a metadata key may legitimately be "00" or "²"). Never a crash.
    assert decode_form(f"a[{index}]=x") == {"a": {key: "x"}}


# --- form: limits ------------------------------------------------------------


def test_depth_limit() -> None:
    assert MAX_DEPTH == 5
    assert decode_form("a[b][c][d][e]=1") == {"a": {"b": {"c": {"d": {"e": "1"}}}}}
    err = _rejected("a[b][c][d][e][f]=1")
    assert err.message == "Parameter 'a' is nested too deeply."


def test_depth_limit_counts_array_levels() -> None:
    assert decode_form("a[0][0][0][0]=1") == {"a": [[[["1"]]]]}
    _rejected("a[0][0][0][0][0]=1")


def test_key_count_limit() -> None:
    at_limit = "&".join(f"k{i}=v" for i in range(MAX_KEYS))
    assert len(decode_form(at_limit)) == MAX_KEYS
    err = _rejected(at_limit + "&one_more=v")
    assert err.message == "Too many parameters in the request body."


def test_key_length_limit() -> None:
    ok = "k" * MAX_KEY_LENGTH
    assert decode_form(f"{ok}=1") == {ok: "1"}
    err = _rejected("k" * (MAX_KEY_LENGTH + 1) + "=1")
    assert err.message == "A parameter name is too long."


def test_key_length_limit_applies_to_decoded_name() -> None:
    # 603 characters on the wire, 201 once decoded: the limit is on the decoded name.
    err = _rejected("%6B" * (MAX_KEY_LENGTH + 1) + "=1")
    assert err.message == "A parameter name is too long."


def test_build_nested_accepts_pairs() -> None:
    assert build_nested([("a[0]", "x"), ("a[1]", "y"), ("b", "")]) == {"a": ["x", "y"], "b": ""}


# --- property: what Stripe SDKs encode comes back as it went in --------------

_KEY_ALPHABET = string.ascii_letters + "_-. %+&=;"
# Nested keys that are all digits would read as array indices, so keys carry a letter.
_keys = st.text(_KEY_ALPHABET, min_size=0, max_size=8).map(lambda s: "k" + s)
_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # annotated: mypy infers ("Cs",) as tuple[str]
_values = st.text(st.characters(codec="utf-8", exclude_categories=_NO_SURROGATES), max_size=12)


def _node(rem: int) -> st.SearchStrategy[Any]:
    if rem == 0:
        return _values
    child = _node(rem - 1)
    return st.one_of(
        _values,
        st.dictionaries(_keys, child, min_size=1, max_size=3),
        st.lists(child, min_size=1, max_size=3),
    )


_bodies = st.dictionaries(_keys, _node(MAX_DEPTH - 1), max_size=5)


def _encode(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Stripe SDK style: hashes as `a[b]`, arrays as `a[0]`, in order."""
    out: list[tuple[str, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _encode(v, f"{prefix}[{k}]" if prefix else k)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _encode(v, f"{prefix}[{i}]")
    else:
        out.append((prefix, data))
    return out


@settings(max_examples=300)
@given(_bodies)
def test_sdk_encoding_round_trips(data: dict[str, Any]) -> None:
    assert decode_form(urlencode(_encode(data))) == data


@given(_bodies)
def test_official_stripe_encoder_round_trips(data: dict[str, Any]) -> None:
    assert decode_form(urlencode(list(_api_encode(data)))) == data


@given(_bodies)
def test_appended_array_encoding_round_trips(data: dict[str, Any]) -> None:
    # Same data with scalar arrays sent as `a[]=x&a[]=y` (Rails / PHP style).
    def enc(node: Any, prefix: str) -> list[tuple[str, str]]:
        if isinstance(node, dict):
            return [p for k, v in node.items() for p in enc(v, f"{prefix}[{k}]")]
        if isinstance(node, list):
            if all(isinstance(v, str) for v in node):
                return [(f"{prefix}[]", v) for v in node]
            return [p for i, v in enumerate(node) for p in enc(v, f"{prefix}[{i}]")]
        return [(prefix, node)]

    pairs = [p for k, v in data.items() for p in enc(v, k)]
    assert decode_form(urlencode(pairs)) == data


# --- JSON --------------------------------------------------------------------


def test_json_object_decoded() -> None:
    body = b'{"amount": 100, "capture": true, "metadata": {"a": "b"}, "x": null, "l": [1]}'
    assert decode_json(body) == {
        "amount": 100,
        "capture": True,
        "metadata": {"a": "b"},
        "x": None,
        "l": [1],
    }


@pytest.mark.parametrize(
    "body",
    [
        b'{"amount": 1.5}',
        b'{"amount": 100.0}',
        b'{"amount": 1e3}',
        b'{"amount": -0.0}',
        b'{"a": {"b": [1, 2.25]}}',
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b'{"amount": -Infinity}',
    ],
)
def test_json_floats_and_constants_rejected(body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        decode_json(body)
    assert ei.value.message == "Invalid JSON in the request body."
    assert ei.value.code == "parameter_invalid_string"


@pytest.mark.parametrize("body", [b"{", b"", b"{'a': 1}", b'{"a": 1,}', b"\xff{}", b"nul"])
def test_json_syntax_errors_rejected(body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        decode_json(body)
    assert ei.value.message == "Invalid JSON in the request body."


def test_json_huge_recursion_is_a_clean_error() -> None:
    with pytest.raises(InvalidRequestError):
        decode_json(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("body", [b"[]", b'[{"a": 1}]', b'"x"', b"1", b"null", b"true"])
def test_json_non_object_rejected(body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as ei:
        decode_json(body)
    assert ei.value.message == "The JSON body must be an object."


def _nest(levels: int) -> Any:
    node: Any = "leaf"
    for i in reversed(range(levels)):
        node = {f"k{i}": node}
    return node


def test_json_depth_limit_matches_form_limit() -> None:
    # Five keys deep is `a[b][c][d][e]`, the deepest form key too.
    assert decode_json(json.dumps(_nest(MAX_DEPTH)).encode()) == _nest(MAX_DEPTH)
    with pytest.raises(InvalidRequestError) as ei:
        decode_json(json.dumps(_nest(MAX_DEPTH + 1)).encode())
    assert ei.value.message == "The JSON body is nested too deeply."


def test_json_depth_limit_counts_lists() -> None:
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        decode_json(b'{"a": [[[[["x"]]]]]}')


def test_json_key_count_limits() -> None:
    ok = {f"k{i}": 1 for i in range(MAX_KEYS)}
    assert decode_json(json.dumps(ok).encode()) == ok
    too_many = {f"k{i}": 1 for i in range(MAX_KEYS + 1)}
    with pytest.raises(InvalidRequestError, match="Too many parameters"):
        decode_json(json.dumps(too_many).encode())
    with pytest.raises(InvalidRequestError, match="Too many parameters"):
        decode_json(json.dumps({"l": list(range(MAX_KEYS + 1))}).encode())


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=20,
    )
)
def test_json_values_round_trip_within_depth_limit(value: Any) -> None:
    body = json.dumps({"v": value}).encode()
    if _depth(value) + 1 <= MAX_DEPTH:
        assert decode_json(body) == {"v": value}
    else:
        with pytest.raises(InvalidRequestError, match="nested too deeply"):
            decode_json(body)


def _depth(node: Any) -> int:
    """Depth of the deepest value: a scalar is 0, each container adds one."""
    if isinstance(node, dict):
        return 1 + max((_depth(v) for v in node.values()), default=-1)
    if isinstance(node, list):
        return 1 + max((_depth(v) for v in node), default=-1)
    return 0
