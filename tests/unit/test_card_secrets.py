"""Card numbers and security codes never leak (paywarden.core.secrets card types)."""

from __future__ import annotations

import copy
import hmac
import json
import logging
import pickle
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paywarden.core.secrets import CardNumber, CardSecurityCode, Secret

# Stripe's published test card numbers (https://docs.stripe.com/testing).
STRIPE_TEST_PANS = [
    "4242424242424242",
    "4000056655665556",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
]


def _spellings(pan: str) -> list[str]:
    """The number as digits, in groups of four with spaces, and with dashes."""
    groups = [pan[i : i + 4] for i in range(0, len(pan), 4)]
    return [pan, " ".join(groups), "-".join(groups)]


def _middle(pan: str) -> str:
    """The digits PCI DSS 3.4.1 forbids displaying (between BIN and last four)."""
    return pan[6:-4]


RENDERINGS: list[Callable[[object], str]] = [
    repr,
    str,
    ascii,
    lambda x: f"{x}",
    lambda x: f"{x!r}",
    lambda x: f"{x:>80}",
    lambda x: f"{x:s}",
    "{}".format,
    lambda x: "%s" % x,  # noqa: UP031 - %-format is the path under test
    lambda x: "%r" % x,  # noqa: UP031
    lambda x: str([x]),
    lambda x: repr({"k": x}),
    lambda x: json.dumps({"k": x}, default=str),
]


@pytest.mark.parametrize("pan", STRIPE_TEST_PANS)
@pytest.mark.parametrize("render", RENDERINGS)
def test_renderings_never_contain_the_number(pan: str, render: Callable[[object], str]) -> None:
    for spelling in _spellings(pan):
        out = render(CardNumber(spelling))
        for form in _spellings(pan):
            assert form not in out
        assert f"CardNumber({pan[:6]}" in out
        assert out.count("*") >= len(_middle(pan))


@pytest.mark.parametrize(
    ("pan", "masked"),
    [
        ("4242424242424242", "424242******4242"),
        ("4000056655665556", "400005******5556"),
        ("5555555555554444", "555555******4444"),
        ("378282246310005", "378282*****0005"),
        ("6011111111111117", "601111******1117"),
        ("4242424242424242424", "424242*********2424"),  # 19 digits
        ("4222222222222", "*********2222"),  # 13 digits: last four only
        ("36227206271667", "**********1667"),  # 14-digit Diners: last four only
        ("12345678", "****5678"),  # shortest PAN ISO/IEC 7812 allows
    ],
)
def test_masked_shows_at_most_bin_and_last_four(pan: str, masked: str) -> None:
    cn = CardNumber(pan)
    assert cn.masked() == masked
    assert repr(cn) == str(cn) == f"CardNumber({masked})"
    shown = sum(ch.isdigit() for ch in masked)
    assert shown <= 10
    if len(pan) < 15:
        assert shown == 4


def test_properties() -> None:
    cn = CardNumber("4000 0566 5566 5556")
    assert cn.reveal() == "4000056655665556"
    assert cn.bin == "400005"
    assert cn.bin8 == "40000566"
    assert cn.last4 == "5556"
    assert cn.length == 16


@pytest.mark.parametrize(
    "spelling", ["4242 4242 4242 4242", "4242-4242-4242-4242", "4242 - 4242  4242-4242"]
)
def test_separators_between_digits_are_stripped(spelling: str) -> None:
    assert CardNumber(spelling).reveal() == "4242424242424242"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        " 4242424242424242",
        "4242424242424242 ",
        "-4242424242424242",
        "4242424242424242-",
        "4242.4242.4242.4242",
        "4242\t4242424242424242",
        "4242424242424242\n",
        "424242424242424x",
        "４２４２４２４２４２４２４２４２",  # fullwidth digits  # noqa: RUF001
        "٤٢٤٢٤٢٤٢٤٢٤٢٤٢٤٢",  # Arabic-Indic digits
        "1234567",  # 7 digits: shorter than any PAN
        "4" * 20,
        "4242424242424242" * 100,
    ],
)
def test_invalid_input_raises_without_echo(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        CardNumber(bad)
    message = str(info.value)
    assert not bad or bad not in message
    assert not re.search(r"\d{3}", message)  # no run of the input's digits either
    assert info.value.__cause__ is None


@pytest.mark.parametrize("bad", [None, 4242424242424242, b"4242424242424242"])
def test_non_str_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="string of digits"):
        CardNumber(bad)  # type: ignore[arg-type]


def test_logging_masked(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("paywarden.test_card_secrets")
    with caplog.at_level(logging.DEBUG, logger="paywarden.test_card_secrets"):
        for pan in STRIPE_TEST_PANS:
            cn = CardNumber(pan)
            log.info("pan=%s", cn)
            log.info("pan=%r", cn)
            log.info("card %(n)s cvc %(c)r", {"n": cn, "c": CardSecurityCode("123")})
            log.info(cn)
    for pan in STRIPE_TEST_PANS:
        for form in _spellings(pan):
            assert form not in caplog.text
    assert "CardNumber(424242******4242)" in caplog.text
    assert "CardSecurityCode(***)" in caplog.text


def test_exceptions_and_tracebacks_masked(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("paywarden.test_card_secrets")
    cn = CardNumber("4242 4242 4242 4242")
    with caplog.at_level(logging.ERROR, logger="paywarden.test_card_secrets"):
        try:
            raise ValueError(cn, {"number": cn})
        except ValueError:
            log.exception("failed with %r", cn)
    exc = ValueError(cn, {"number": cn})
    assert "4242424242424242" not in str(exc)
    assert "4242424242424242" not in repr(exc)
    for form in _spellings("4242424242424242"):
        assert form not in caplog.text


def test_json_without_default_refused() -> None:
    with pytest.raises(TypeError):
        json.dumps({"k": CardNumber("4242424242424242")})
    assert CardNumber("4242424242424242").__json__() == "CardNumber(424242******4242)"


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("value", [CardNumber("4242424242424242"), CardSecurityCode("123")])
def test_pickle_refused(value: object, protocol: int) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(value, protocol=protocol)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [value]}, protocol=protocol)


@pytest.mark.parametrize("fn", [copy.copy, copy.deepcopy])
@pytest.mark.parametrize("value", [CardNumber("4242424242424242"), CardSecurityCode("123")])
def test_copy_refused(value: object, fn: Callable[[object], object]) -> None:
    with pytest.raises(TypeError):
        fn(value)


@pytest.mark.parametrize("value", [CardNumber("4242424242424242"), CardSecurityCode("123")])
def test_introspection_blocked(value: object) -> None:
    with pytest.raises(AttributeError, match="reveal"):
        _ = value._value  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        getattr(value, "_value")  # noqa: B009 - getattr is the path under test
    with pytest.raises(TypeError):
        vars(value)
    with pytest.raises(AttributeError):
        _ = value.__dict__
    with pytest.raises(AttributeError, match="immutable"):
        value._value = "4000056655665556"  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        del value._value  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        value.extra = 1  # type: ignore[attr-defined]


def test_equality_semantics() -> None:
    a = CardNumber("4242424242424242")
    assert a == CardNumber("4242 4242 4242 4242")
    assert a != CardNumber("4000056655665556")
    assert a != CardNumber("424242424242424242")
    # Never against plain strings, Secrets or other card types.
    assert a.__eq__("4242424242424242") is NotImplemented
    assert (a == "4242424242424242") is False
    assert ("4242424242424242" == a) is False  # noqa: SIM300 - the reflected path is under test
    assert a.__eq__(Secret("4242424242424242")) is NotImplemented
    assert a != Secret("4242424242424242")
    assert CardSecurityCode("424") != CardNumber("42424242")
    assert CardSecurityCode("123") == CardSecurityCode("123")
    assert CardSecurityCode("123") != CardSecurityCode("124")
    assert CardSecurityCode("123").__eq__("123") is NotImplemented


def test_equality_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert CardNumber("4242424242424242") == CardNumber("4242424242424242")
    assert CardSecurityCode("123") != CardSecurityCode("321")
    assert calls == [(b"4242424242424242", b"4242424242424242"), (b"123", b"321")]


def test_hash_does_not_depend_on_value() -> None:
    assert hash(CardNumber("4242424242424242")) == hash(CardNumber("5555555555554444"))
    assert hash(CardSecurityCode("123")) == hash(CardSecurityCode("9876"))
    assert len({CardNumber("4242424242424242"), CardNumber("4242-4242-4242-4242")}) == 1


def test_dir_does_not_carry_value() -> None:
    assert "4242424242424242" not in " ".join(dir(CardNumber("4242424242424242")))


@pytest.mark.parametrize("cvc", ["123", "0000", "987"])
def test_cvc_masked(cvc: str) -> None:
    code = CardSecurityCode(cvc)
    assert code.reveal() == cvc
    assert code.length == len(cvc)
    assert code.masked() == "***"
    for render in RENDERINGS:
        out = render(code)
        assert cvc not in out
        assert "CardSecurityCode(***)" in out


@pytest.mark.parametrize(
    "bad",
    ["", "12", "12345", "12a", " 123", "123 ", "１２３", "-12", "1.2"],  # noqa: RUF001
)
def test_cvc_invalid_raises_without_echo(bad: str) -> None:
    with pytest.raises(ValueError, match="3 or 4 digits") as info:
        CardSecurityCode(bad)
    assert not bad or bad not in str(info.value)


@given(st.from_regex(r"[0-9]{8,19}", fullmatch=True))
def test_no_rendering_shows_more_than_bin_and_last_four(pan: str) -> None:
    cn = CardNumber(pan)
    assert cn.reveal() == pan
    for out in (repr(cn), str(cn), f"{cn}", "%s" % cn, json.dumps(cn, default=str)):  # noqa: UP031
        masked = out.removeprefix('"').removeprefix("CardNumber(").removesuffix('"')
        masked = masked.removesuffix(")")
        assert len(masked) == len(pan)
        for i, ch in enumerate(masked):
            visible = i >= len(pan) - 4 or (len(pan) >= 15 and i < 6)
            assert ch == (pan[i] if visible else "*")


def test_secret_bytes_masks_key_material() -> None:
    import json as _json
    import pickle as _pickle

    from paywarden.core.secrets import SecretBytes

    raw = bytes(range(32))
    k = SecretBytes(raw, "data key")
    for text in (repr(k), str(k), f"{k}", _json.dumps({"k": k}, default=str)):
        assert raw.hex() not in text and str(raw) not in text
        assert "***" in text
    assert k.reveal() == raw
    assert k == SecretBytes(raw) and k != SecretBytes(bytes(32))
    with pytest.raises(TypeError):
        _pickle.dumps(k)
    with pytest.raises(AttributeError):
        k._value  # noqa: B018
