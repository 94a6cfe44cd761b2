"""Declarative parameter validation (paywarden.http.params)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.errors import InvalidRequestError
from paywarden.core.money import MAX_AMOUNT
from paywarden.http.params import EXPAND, PAGINATION, Param, merge_metadata, validate


def _err(params: dict[str, Any], spec: dict[str, Param]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as ei:
        validate(params, spec)
    assert ei.value.status == 400
    return ei.value


def one(kind: str, value: Any, **kw: Any) -> Any:
    return validate({"x": value}, {"x": Param(kind, **kw)})["x"]


def one_err(kind: str, value: Any, **kw: Any) -> InvalidRequestError:
    return _err({"x": value}, {"x": Param(kind, **kw)})


# --- unknown / missing -------------------------------------------------------


def test_unknown_parameter() -> None:
    err = _err({"amount": "1", "x": "y"}, {"amount": Param("int")})
    assert err.message == "Received unknown parameter: x"
    assert err.param == "x"
    assert err.code == "parameter_unknown"


def test_unknown_nested_parameter_is_named_with_brackets() -> None:
    spec = {"card": Param("dict", fields={"number": Param("str")})}
    err = _err({"card": {"number": "4242", "foo": "1"}}, spec)
    assert err.message == "Received unknown parameter: card[foo]"
    assert err.param == "card[foo]"
    assert err.code == "parameter_unknown"


def test_unknown_deeply_nested_parameter() -> None:
    inner = Param("dict", fields={"c": Param("str")})
    spec = {"a": Param("dict", fields={"b": inner})}
    err = _err({"a": {"b": {"zz": "1"}}}, spec)
    assert err.param == "a[b][zz]"
    assert err.message == "Received unknown parameter: a[b][zz]"


def test_unknown_parameter_name_clipped_in_message() -> None:
    name = "u" * 200
    err = _err({name: "1"}, {})
    assert err.message == "Received unknown parameter: " + "u" * 80 + "…"
    assert err.param == name


def test_missing_required() -> None:
    err = _err({}, {"amount": Param("amount", required=True)})
    assert err.message == "Missing required param: amount."
    assert err.param == "amount"
    assert err.code == "parameter_missing"


def test_missing_required_nested() -> None:
    spec = {"card": Param("dict", fields={"number": Param("str", required=True)})}
    err = _err({"card": {}}, spec)
    assert err.message == "Missing required param: card[number]."
    assert err.param == "card[number]"


def test_optional_absent_is_omitted_not_none() -> None:
    assert validate({}, {"a": Param("str"), "b": Param("int")}) == {}


def test_required_given_as_blank_is_missing() -> None:
    err = one_err("int", "", required=True)
    assert err.code == "parameter_missing"
    assert err.param == "x"


def test_required_given_as_none_is_missing() -> None:
    err = one_err("enum", None, required=True, choices=("a",))
    assert err.code == "parameter_missing"


# --- nullable / blank --------------------------------------------------------


@pytest.mark.parametrize("kind", ["int", "amount", "bool", "currency", "email", "id"])
def test_nullable_blank_unsets(kind: str) -> None:
    assert one(kind, "", nullable=True) is None


def test_nullable_required_blank_unsets() -> None:
    assert one("str", "", nullable=True, required=True) is None
    assert one("int", "", nullable=True, required=True) is None


def test_nullable_str_blank_unsets() -> None:
    assert one("str", "", nullable=True) is None


def test_non_nullable_str_blank_is_blank() -> None:
    assert one("str", "") == ""


def test_json_null_on_nullable() -> None:
    assert one("enum", None, nullable=True, choices=("a",)) is None


# --- str ---------------------------------------------------------------------


def test_str_ok_and_max_length() -> None:
    assert one("str", "abc", max_length=3) == "abc"
    err = one_err("str", "abcd", max_length=3)
    assert err.message == "Invalid string: x must be at most 3 characters."
    assert err.code == "parameter_invalid_string"
    assert err.param == "x"


def test_str_default_max_length_5000() -> None:
    assert one("str", "a" * 5000) == "a" * 5000
    one_err("str", "a" * 5001)


@pytest.mark.parametrize("value", [1, True, ["a"], {"a": "b"}])
def test_str_rejects_non_strings(value: Any) -> None:
    err = one_err("str", value)
    assert err.message == "Invalid string: x must be a string."


def test_str_rejects_nul() -> None:
    err = one_err("str", "a\x00b")
    assert err.message == "Invalid string: x contains a NUL character."


def test_str_check_hook_transforms_and_sees_name() -> None:
    seen: list[str] = []

    def check(v: Any, name: str) -> Any:
        seen.append(name)
        return v.upper()

    assert one("str", "abc", check=check) == "ABC"
    assert seen == ["x"]


# --- id ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["cus_123", "pi_3QpXabcDEF", "A" * 128, "_"])
def test_id_ok(value: str) -> None:
    assert one("id", value) == value


@pytest.mark.parametrize(
    "value", ["cus-123", "cus 123", "cus_123\n", "a" * 129, "cus/../x", "é", 123, ["cus_1"]]
)
def test_id_rejected(value: Any) -> None:
    err = one_err("id", value)
    assert err.message == "Invalid x: must be an object id."
    assert err.code == "resource_missing"


# --- int / amount ------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(5, 5), ("5", 5), ("-7", -7), ("007", 7), (0, 0)])
def test_int_from_json_int_and_digit_string(value: Any, expected: int) -> None:
    assert one("int", value) == expected


@pytest.mark.parametrize(
    "value", ["1.5", "1e3", "0x10", " 5", "5 ", "5\n", "+5", "abc", "1_000", "١٢"]
)
def test_int_rejects_non_digit_strings(value: str) -> None:
    err = one_err("int", value)
    assert err.code == "parameter_invalid_integer"
    assert err.param == "x"


@pytest.mark.parametrize("value", [True, False, 1.0, 1.5, [1], {"a": 1}])
def test_int_rejects_bools_floats_and_containers(value: Any) -> None:
    err = one_err("int", value)
    assert err.code == "parameter_invalid_integer"


def test_int_bool_message() -> None:
    assert one_err("int", True).message == "Invalid integer: x must be an integer."


def test_int_string_message_echoes_clipped_value() -> None:
    assert one_err("int", "abc").message == "Invalid integer: abc"
    assert one_err("int", "z" * 100).message == "Invalid integer: " + "z" * 80 + "…"


def test_int_digit_count_capped() -> None:
    # Unbounded ints still fit a 64-bit column and JSON's safe integer range.
    assert one("int", str(2**53 - 1)) == 2**53 - 1
    assert one_err("int", str(2**53)).message == f"Invalid x: must be at most {2**53 - 1}."
    one_err("int", "9" * 19)
    one_err("int", "9" * 20)


def test_int_bounds() -> None:
    assert one("int", "1", min=1, max=100) == 1
    assert one("int", 100, min=1, max=100) == 100
    low = one_err("int", 0, min=1, max=100)
    assert low.message == "Invalid x: must be at least 1."
    assert low.code == "parameter_invalid_integer"
    high = one_err("int", "101", min=1, max=100)
    assert high.message == "Invalid x: must be at most 100."
    assert high.code == "parameter_invalid_integer"


@given(st.integers(min_value=-(10**18), max_value=2**53 - 1))
def test_int_json_and_string_agree(n: int) -> None:
    assert one("int", n) == one("int", str(n)) == n


def test_amount_bounds() -> None:
    assert MAX_AMOUNT == 99_999_999
    assert one("amount", 1) == 1
    assert one("amount", "99999999") == 99_999_999
    small = one_err("amount", 0)
    assert small.message == "Invalid x: must be at least 1."
    assert small.code == "amount_too_small"
    neg = one_err("amount", "-5")
    assert neg.code == "amount_too_small"
    large = one_err("amount", 100_000_000)
    assert large.message == "Invalid x: must be at most 99999999."
    assert large.code == "amount_too_large"


def test_amount_min_override() -> None:
    assert one("amount", 0, min=0) == 0
    assert one_err("amount", 49, min=50).code == "amount_too_small"


def test_amount_param_named_in_error() -> None:
    err = _err({"amount": "0"}, {"amount": Param("amount", required=True)})
    assert err.param == "amount"
    assert err.message == "Invalid amount: must be at least 1."


@given(st.integers())
def test_amount_accepts_exactly_1_to_max(n: int) -> None:
    if 1 <= n <= MAX_AMOUNT:
        assert one("amount", n) == n
    else:
        err = one_err("amount", n)
        assert err.code == ("amount_too_small" if n < 1 else "amount_too_large")


def test_amount_rejects_bool() -> None:
    assert one_err("amount", True).code == "parameter_invalid_integer"


# --- bool --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("true", True), ("false", False)]
)
def test_bool_ok(value: Any, expected: bool) -> None:
    assert one("bool", value) is expected


@pytest.mark.parametrize("value", ["True", "FALSE", "1", "0", "yes", "on", 1, 0, "true "])
def test_bool_rejected(value: Any) -> None:
    err = one_err("bool", value)
    assert err.message == "Invalid boolean: x must be true or false."
    assert err.code == "parameter_invalid_string"


# --- enum --------------------------------------------------------------------


def test_enum() -> None:
    choices = ("automatic", "manual")
    assert one("enum", "manual", choices=choices) == "manual"
    err = one_err("enum", "Manual", choices=choices)
    assert err.message == "Invalid x: must be one of `automatic`, `manual`."
    assert err.param == "x"
    assert one_err("enum", 1, choices=choices).param == "x"


# --- currency ----------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("usd", "usd"), ("USD", "usd"), ("JpY", "jpy")])
def test_currency_normalized(value: str, expected: str) -> None:
    assert one("currency", value) == expected


def test_currency_unknown() -> None:
    err = one_err("currency", "XYZ")
    assert err.message == "Invalid currency: xyz. It must be a supported ISO 4217 code."
    assert err.param == "x"


def test_currency_not_string() -> None:
    assert one_err("currency", 840).message == "Invalid currency."


# --- email -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a@b.co", "jenny.rosen+x@example.com"])
def test_email_ok(value: str) -> None:
    assert one("email", value) == value


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        "a@@b",
        "a b@c.d",
        "@b.co",
        "a@",
        "a@b.co\n",
        "x" * 65 + "@b.co",
        "a@" + "b" * 256,
        5,
    ],
)
def test_email_rejected(value: Any) -> None:
    err = one_err("email", value)
    assert err.message == "Invalid email address: x."
    assert err.code == "email_invalid"


def test_email_longest_parts_accepted() -> None:
    value = "a" * 64 + "@" + "b" * 255
    assert one("email", value) == value


# --- metadata ----------------------------------------------------------------


def test_metadata_ok_and_ints_become_strings() -> None:
    assert one("metadata", {"a": "1", "b": 2}) == {"a": "1", "b": "2"}


def test_metadata_blank_value_deletes() -> None:
    assert one("metadata", {"a": "", "b": None, "c": "x"}) == {"a": None, "b": None, "c": "x"}


def test_metadata_blank_clears_all() -> None:
    assert one("metadata", "") == {}


@pytest.mark.parametrize("value", ["x", ["a"], 5])
def test_metadata_must_be_hash(value: Any) -> None:
    err = one_err("metadata", value)
    assert err.message == "Invalid metadata: must be a hash of string keys to string values."


def test_metadata_50_keys() -> None:
    fifty = {f"k{i}": "v" for i in range(50)}
    assert one("metadata", fifty) == fifty
    err = one_err("metadata", {**fifty, "k50": "v"})
    assert err.message == "Invalid metadata: at most 50 keys are allowed."
    assert err.param == "x"


def test_metadata_key_length() -> None:
    assert one("metadata", {"k" * 40: "v"}) == {"k" * 40: "v"}
    err = one_err("metadata", {"k" * 41: "v"})
    assert err.message == "Invalid metadata key: keys are at most 40 characters."
    assert err.param == f"x[{'k' * 41}]"


@pytest.mark.parametrize("key", ["a[b]", "a]", "[a"])
def test_metadata_key_with_brackets_rejected(key: str) -> None:
    one_err("metadata", {key: "v"})


def test_metadata_value_length() -> None:
    assert one("metadata", {"k": "v" * 500}) == {"k": "v" * 500}
    err = one_err("metadata", {"k": "v" * 501})
    assert err.message == "Invalid metadata value: values are at most 500 characters."
    assert err.param == "x[k]"


@pytest.mark.parametrize("value", [True, 1.5, {"a": "b"}, ["a"]])
def test_metadata_value_must_be_string(value: Any) -> None:
    err = one_err("metadata", {"k": value})
    assert err.message == "Invalid metadata value: values must be strings."
    assert err.param == "x[k]"


def test_metadata_named_metadata_param() -> None:
    err = _err({"metadata": {"k": True}}, {"metadata": Param("metadata")})
    assert err.param == "metadata[k]"


def test_merge_metadata_none_keeps_current() -> None:
    cur = {"a": "1"}
    out = merge_metadata(cur, None)
    assert out == cur
    assert out is not cur


def test_merge_metadata_empty_clears() -> None:
    assert merge_metadata({"a": "1", "b": "2"}, {}) == {}


def test_merge_metadata_sets_replaces_and_deletes() -> None:
    cur = {"a": "1", "b": "2", "c": "3"}
    assert merge_metadata(cur, {"a": "10", "b": None, "d": "4", "zz": None}) == {
        "a": "10",
        "c": "3",
        "d": "4",
    }
    assert cur == {"a": "1", "b": "2", "c": "3"}


def test_merge_metadata_limit_applies_to_result() -> None:
    cur = {f"k{i}": "v" for i in range(50)}
    assert len(merge_metadata(cur, {"k0": None, "new": "v"})) == 50
    with pytest.raises(InvalidRequestError) as ei:
        merge_metadata(cur, {"new": "v"})
    assert ei.value.param == "metadata"
    assert ei.value.message == "Invalid metadata: at most 50 keys are allowed."


def test_metadata_validate_then_merge_round_trip() -> None:
    update = one("metadata", {"a": "", "b": "x"})
    assert merge_metadata({"a": "1", "c": "2"}, update) == {"b": "x", "c": "2"}


# --- dict / list -------------------------------------------------------------


def test_dict_validates_fields() -> None:
    spec = {"card": Param("dict", fields={"exp_month": Param("int", min=1, max=12)})}
    assert validate({"card": {"exp_month": "12"}}, spec) == {"card": {"exp_month": 12}}
    err = _err({"card": {"exp_month": "13"}}, spec)
    assert err.param == "card[exp_month]"
    assert err.message == "Invalid card[exp_month]: must be at most 12."


@pytest.mark.parametrize("value", ["x", ["a"], 1])
def test_dict_must_be_hash(value: Any) -> None:
    err = one_err("dict", value, fields={"a": Param("str")})
    assert err.message == "Invalid object: x must be a hash."


def test_list_of_items() -> None:
    item = Param("int", min=0)
    assert one("list", ["1", 2], item=item) == [1, 2]
    err = one_err("list", ["1", "-1"], item=item)
    assert err.param == "x[1]"


def test_list_single_string_becomes_one_item() -> None:
    assert one("list", "data.customer", item=Param("str")) == ["data.customer"]


def test_list_must_be_array() -> None:
    err = one_err("list", {"a": "b"}, item=Param("str"))
    assert err.message == "Invalid array: x must be an array."


def test_list_max_items() -> None:
    assert one("list", ["a"] * 3, item=Param("str"), max_items=3) == ["a"] * 3
    err = one_err("list", ["a"] * 4, item=Param("str"), max_items=3)
    assert err.message == "Invalid array: x may have at most 3 items."


def test_list_of_dicts_names_index() -> None:
    item = Param("dict", fields={"price": Param("id", required=True)})
    err = _err({"items": [{"price": "p_1"}, {}]}, {"items": Param("list", item=item)})
    assert err.param == "items[1][price]"
    assert err.code == "parameter_missing"


# --- shared specs ------------------------------------------------------------


def test_pagination_spec() -> None:
    out = validate(
        {"limit": "10", "starting_after": "cus_1", "created": {"gte": "0"}, "expand": ["a"]},
        PAGINATION,
    )
    assert out == {"limit": 10, "starting_after": "cus_1", "created": {"gte": 0}, "expand": ["a"]}
    assert _err({"limit": "101"}, PAGINATION).param == "limit"
    assert _err({"limit": "0"}, PAGINATION).param == "limit"
    assert _err({"created": {"gt": "-1"}}, PAGINATION).param == "created[gt]"
    assert _err({"created": {"eq": "1"}}, PAGINATION).param == "created[eq]"


def test_expand_item_length() -> None:
    assert validate({"expand": ["a" * 200]}, EXPAND) == {"expand": ["a" * 200]}
    assert _err({"expand": ["a" * 201]}, EXPAND).param == "expand[0]"


@given(st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=5), max_size=5))
def test_unknown_keys_always_rejected_with_their_name(params: dict[str, str]) -> None:
    spec = {"known": Param("str")}
    unknown = [k for k in params if k != "known"]
    if not unknown:
        return
    err = _err(params, spec)
    assert err.code == "parameter_unknown"
    assert err.param in unknown
