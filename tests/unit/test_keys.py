"""API key format, checksum, hashing (tenancy.keys) and restricted-key scopes (tenancy.scopes)."""

from __future__ import annotations

import hashlib
import hmac
import re
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.secrets import Secret
from paywarden.tenancy.keys import (
    KIND_PREFIX,
    ParsedKey,
    generate_key,
    hash_key,
    hint,
    parse_key,
)
from paywarden.tenancy.scopes import (
    LEVELS,
    RESOURCES,
    allows,
    parse_scope_args,
    validate_scopes,
)

KINDS = [("secret", "pws"), ("publishable", "pwp"), ("restricted", "pwr")]
BASE62 = string.digits + string.ascii_letters


@pytest.mark.parametrize(("kind", "prefix"), KINDS)
@pytest.mark.parametrize(("livemode", "mode"), [(False, "test"), (True, "live")])
def test_generated_key_shape_and_parse(kind: str, prefix: str, livemode: bool, mode: str) -> None:
    key = generate_key(kind, livemode)
    assert isinstance(key, Secret)
    raw = key.reveal()
    assert re.fullmatch(rf"{prefix}_{mode}_[0-9A-Za-z]{{38}}", raw)
    assert parse_key(raw) == ParsedKey(kind=kind, livemode=livemode)


def test_prefixes_are_not_stripes() -> None:
    assert KIND_PREFIX == {"secret": "pws", "publishable": "pwp", "restricted": "pwr"}


def test_generated_key_is_a_masked_secret() -> None:
    key = generate_key("secret", False)
    assert key.reveal() not in repr(key)
    assert repr(key) == "Secret(secret_key=***)"


def test_unknown_kind_rejected() -> None:
    with pytest.raises(KeyError):
        generate_key("admin", False)


def test_generated_keys_are_unique() -> None:
    keys = {generate_key("secret", False).reveal() for _ in range(500)}
    assert len(keys) == 500


def test_generated_body_uses_whole_alphabet() -> None:
    bodies = "".join(generate_key("secret", False).reveal()[9:41] for _ in range(300))
    assert set(bodies) == set(BASE62)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "pws_test_",
        "sk_test_" + "a" * 38,
        "pwx_test_" + "a" * 38,
        "pws_prod_" + "a" * 38,
        "PWS_TEST_" + "a" * 38,
        "pws_test_" + "a" * 37,
        "pws_test_" + "a" * 39,
        "pws_test_" + "a" * 37 + "-",
        "pws_test_" + "a" * 38,  # right shape, wrong checksum
    ],
)
def test_parse_rejects_malformed(raw: str) -> None:
    assert parse_key(raw) is None


def test_parse_rejects_surrounding_whitespace() -> None:
    raw = generate_key("secret", False).reveal()
    for bad in (f" {raw}", f"{raw} ", f"{raw}\n", f"{raw}\r\n", f"\n{raw}"):
        assert parse_key(bad) is None, repr(bad)


def test_checksum_binds_prefix_and_mode() -> None:
    raw = generate_key("secret", False).reveal()
    assert parse_key("pwp" + raw[3:]) is None
    assert parse_key("pws_live" + raw[8:]) is None


@given(
    kind=st.sampled_from([k for k, _ in KINDS]),
    livemode=st.booleans(),
    data=st.data(),
)
def test_any_single_character_change_is_detected(
    kind: str, livemode: bool, data: st.DataObject
) -> None:
    raw = generate_key(kind, livemode).reveal()
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    repl = data.draw(
        st.one_of(st.sampled_from(BASE62 + "_"), st.characters()).filter(lambda c: c != raw[pos]),
        label="repl",
    )
    changed = raw[:pos] + repl + raw[pos + 1 :]
    assert parse_key(changed) is None


@given(data=st.data())
def test_adjacent_transposition_is_detected(data: st.DataObject) -> None:
    raw = generate_key("secret", True).reveal()
    pos = data.draw(st.integers(9, len(raw) - 2))
    if raw[pos] == raw[pos + 1]:
        return
    swapped = raw[:pos] + raw[pos + 1] + raw[pos] + raw[pos + 2 :]
    assert parse_key(swapped) is None


def test_hint_shows_prefix_and_last_four_only() -> None:
    raw = generate_key("restricted", True).reveal()
    h = hint(raw)
    assert h == f"pwr_live_****{raw[-4:]}"
    assert raw[9:-4] not in h


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sk_test_" + "x" * 20 + "ABCD", "sk_test_****ABCD"),
        ("short", "****"),
        ("pws_test_abc", "pws_test_****"),
        ("", "****"),
        ("no-prefix-but-long-enough-WXYZ", "****WXYZ"),
    ],
)
def test_hint_edge_cases(raw: str, expected: str) -> None:
    assert hint(raw) == expected


@given(st.text(min_size=24, alphabet=BASE62 + "_"))
def test_hint_never_reveals_more_than_last_four(raw: str) -> None:
    h = hint(raw)
    assert h.endswith("****" + raw[-4:])
    head = h.removesuffix(raw[-4:]).removesuffix("****")
    assert re.fullmatch(r"([a-z]{2,4}_(test|live)_)?", head)
    assert raw.startswith(head)


def test_hash_key_is_hmac_sha256_under_pepper() -> None:
    raw = generate_key("secret", False).reveal()
    pepper = Secret("pepper-one")
    expected = hmac.new(b"pepper-one", raw.encode(), hashlib.sha256).hexdigest()
    assert hash_key(raw, pepper) == expected
    assert re.fullmatch(r"[0-9a-f]{64}", expected)
    assert hash_key(raw, Secret("pepper-one")) == expected


def test_hash_key_depends_on_pepper_and_key() -> None:
    raw = generate_key("secret", False).reveal()
    h1 = hash_key(raw, Secret("pepper-one"))
    assert hash_key(raw, Secret("pepper-two")) != h1
    assert hash_key(raw + "x", Secret("pepper-one")) != h1
    assert raw not in h1
    assert h1 != hashlib.sha256(raw.encode()).hexdigest()


@given(st.text(min_size=1), st.text(min_size=1), st.text(min_size=1))
def test_hash_key_pepper_property(raw: str, p1: str, p2: str) -> None:
    if p1 == p2:
        return
    assert hash_key(raw, Secret(p1)) != hash_key(raw, Secret(p2))


# --- scopes ------------------------------------------------------------------


def test_validate_scopes_drops_none() -> None:
    assert validate_scopes({"customers": "read", "charges": "none", "refunds": "write"}) == {
        "customers": "read",
        "refunds": "write",
    }


def test_validate_scopes_all_resources_and_levels() -> None:
    for r in RESOURCES:
        for lvl in LEVELS:
            assert validate_scopes({r: lvl}) == ({} if lvl == "none" else {r: lvl})


def test_validate_scopes_unknown_resource() -> None:
    with pytest.raises(ValueError, match=r"unknown resource 'accounts'; known: customers, "):
        validate_scopes({"accounts": "read"})


@pytest.mark.parametrize("level", ["admin", "READ", "", "rw"])
def test_validate_scopes_unknown_level(level: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown level '{level}' for customers"):
        validate_scopes({"customers": level})


@pytest.mark.parametrize(
    ("level", "read_ok", "write_ok"),
    [("write", True, True), ("read", True, False), ("none", False, False)],
)
def test_allows_write_implies_read(level: str, read_ok: bool, write_ok: bool) -> None:
    scopes = {"customers": level}
    assert allows(scopes, "customers", write=False) is read_ok
    assert allows(scopes, "customers", write=True) is write_ok


def test_allows_other_resources_denied() -> None:
    scopes = {"customers": "write"}
    assert not allows(scopes, "charges", write=False)
    assert not allows(scopes, "charges", write=True)
    assert not allows({}, "customers", write=False)


@given(st.dictionaries(st.sampled_from(RESOURCES), st.sampled_from(LEVELS)), st.data())
def test_allows_write_is_subset_of_read(scopes: dict[str, str], data: st.DataObject) -> None:
    resource = data.draw(st.sampled_from(RESOURCES))
    valid = validate_scopes(scopes)
    if allows(valid, resource, write=True):
        assert allows(valid, resource, write=False)


def test_parse_scope_args() -> None:
    assert parse_scope_args(["customers:read", "payment_intents:write"]) == {
        "customers": "read",
        "payment_intents": "write",
    }


def test_parse_scope_args_defaults_to_read() -> None:
    assert parse_scope_args(["events"]) == {"events": "read"}
    assert parse_scope_args(["events:"]) == {"events": "read"}


def test_parse_scope_args_none_and_empty() -> None:
    assert parse_scope_args(["charges:none"]) == {}
    assert parse_scope_args([]) == {}


def test_parse_scope_args_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown resource 'bogus'"):
        parse_scope_args(["bogus:read"])
    with pytest.raises(ValueError, match="unknown level 'admin'"):
        parse_scope_args(["customers:admin"])
    with pytest.raises(ValueError, match="unknown level"):
        parse_scope_args(["customers:read:write"])
