"""Secret values must not leak by accident (paywarden.core.secrets)."""

from __future__ import annotations

import copy
import json
import logging
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.secrets import Secret

VALUE = "sk_very_secret_value_1234567890"


@pytest.fixture
def s() -> Secret:
    return Secret(VALUE, "api_key")


def test_reveal_returns_value(s: Secret) -> None:
    assert s.reveal() == VALUE


def test_repr_and_str_masked(s: Secret) -> None:
    assert repr(s) == "Secret(api_key=***)"
    assert str(s) == "Secret(api_key=***)"


def test_default_label() -> None:
    assert repr(Secret(VALUE)) == "Secret(secret=***)"


@pytest.mark.parametrize(
    "render",
    [
        lambda x: f"{x}",
        lambda x: f"{x!r}",
        lambda x: f"{x!s}",
        lambda x: f"{x:>80}",
        lambda x: f"{x:s}",
        lambda x: format(x, ""),
        "{}".format,
        "{!r}".format,
        lambda x: "%s" % x,  # noqa: UP031 - %-format is the path under test
        lambda x: "%r" % x,  # noqa: UP031
        lambda x: "%(k)s" % {"k": x},  # noqa: UP031
        lambda x: str([x]),
        lambda x: repr({"k": x}),
        lambda x: str((x,)),
        ascii,
    ],
)
def test_string_conversions_masked(s: Secret, render: object) -> None:
    out = render(s)  # type: ignore[operator]
    assert VALUE not in out
    assert "***" in out


def test_logging_masked(s: Secret, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("paywarden.test_secrets")
    with caplog.at_level(logging.DEBUG, logger="paywarden.test_secrets"):
        log.info("key=%s", s)
        log.info("key=%r", s)
        log.info("both %s %r", s, s)
        log.info(s)
        log.info("dict %s", {"key": s})
        log.warning("fmt %(key)s", {"key": s})
    assert len(caplog.records) == 6
    assert VALUE not in caplog.text
    for rec in caplog.records:
        assert VALUE not in rec.getMessage()
    assert "Secret(api_key=***)" in caplog.text


def test_logging_exception_masked(s: Secret, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("paywarden.test_secrets")
    with caplog.at_level(logging.ERROR, logger="paywarden.test_secrets"):
        try:
            raise ValueError(s)
        except ValueError:
            log.exception("failed with %s", s)
    assert VALUE not in caplog.text


def test_json_plain_refuses(s: Secret) -> None:
    with pytest.raises(TypeError):
        json.dumps({"k": s})


def test_json_default_str_masked(s: Secret) -> None:
    out = json.dumps({"k": s}, default=str)
    assert VALUE not in out
    assert json.loads(out) == {"k": "Secret(api_key=***)"}


def test_json_convention_hook_masked(s: Secret) -> None:
    assert VALUE not in s.__json__()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_refused(s: Secret, protocol: int) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(s, protocol=protocol)


def test_pickle_refused_when_nested(s: Secret) -> None:
    with pytest.raises(TypeError):
        pickle.dumps({"k": [s]})


@pytest.mark.parametrize("fn", [copy.copy, copy.deepcopy])
def test_copy_refused(s: Secret, fn: object) -> None:
    with pytest.raises(TypeError):
        fn(s)  # type: ignore[operator]


def test_getstate_refused(s: Secret) -> None:
    with pytest.raises(TypeError):
        s.__getstate__()


def test_vars_and_dict_do_not_expose(s: Secret) -> None:
    with pytest.raises(TypeError):
        vars(s)
    with pytest.raises(AttributeError):
        _ = s.__dict__


def test_private_attribute_blocked(s: Secret) -> None:
    with pytest.raises(AttributeError, match="reveal"):
        _ = s._value
    with pytest.raises(AttributeError):
        getattr(s, "_value")  # noqa: B009 - getattr is the path under test


def test_dir_does_not_carry_value(s: Secret) -> None:
    assert VALUE not in " ".join(dir(s))


def test_equality_between_secrets() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a", "one") == Secret("a", "two")
    assert Secret("a") != Secret("b")
    assert Secret("a") != Secret("a" * 2)


def test_equality_with_plain_str_is_not_implemented(s: Secret) -> None:
    assert s.__eq__(VALUE) is NotImplemented
    assert (s == VALUE) is False
    assert (VALUE == s) is False  # noqa: SIM300 - the reflected comparison is under test
    assert s != VALUE
    assert s.__eq__(None) is NotImplemented
    assert s.__eq__(VALUE.encode()) is NotImplemented


def test_equality_uses_constant_time_compare(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert Secret("x") == Secret("x")
    assert Secret("x") != Secret("y")
    assert calls == [(b"x", b"x"), (b"x", b"y")]


@given(st.text(), st.text())
def test_equality_matches_value_equality(a: str, b: str) -> None:
    assert (Secret(a) == Secret(b)) == (a == b)


def test_hash_does_not_depend_on_value() -> None:
    assert hash(Secret("a", "lbl")) == hash(Secret("b", "lbl"))
    assert {Secret("a", "lbl"), Secret("a", "lbl")} == {Secret("a", "lbl")}


def test_immutable_set(s: Secret) -> None:
    with pytest.raises(AttributeError, match="immutable"):
        s._value = "other"
    with pytest.raises(AttributeError, match="immutable"):
        s._label = "other"
    with pytest.raises(AttributeError):
        s.extra = 1
    assert s.reveal() == VALUE
    assert repr(s) == "Secret(api_key=***)"


def test_immutable_delete(s: Secret) -> None:
    with pytest.raises(AttributeError):
        del s._value
    with pytest.raises(AttributeError):
        del s._label
    assert s.reveal() == VALUE
    assert repr(s) == "Secret(api_key=***)"


def test_bool_and_len() -> None:
    assert not Secret("")
    assert Secret("x")
    assert len(Secret("abc")) == 3


@given(st.text(min_size=1).filter(lambda v: v not in '"Secret(lbl=***)"'))
def test_no_rendering_contains_value(value: str) -> None:
    sec = Secret(value, "lbl")
    for out in (repr(sec), str(sec), f"{sec}", "%s" % sec, json.dumps(sec, default=str)):  # noqa: UP031
        assert value not in out
