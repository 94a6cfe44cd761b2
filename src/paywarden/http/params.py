"""Declarative parameter validation with Stripe's error messages.

A spec is a dict of parameter name -> :class:`Param`. :func:`validate` returns
only known, typed values; anything unknown, mistyped or out of range raises an
:class:`InvalidRequestError` naming the parameter (``metadata[foo]`` style).
Form bodies arrive as strings and JSON bodies as native types; both are accepted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from paywarden.core.errors import ParameterError
from paywarden.core.money import MAX_AMOUNT, CurrencyError, normalize_currency
from paywarden.vault.cards import luhn_valid

_INT_RE = re.compile(r"^-?[0-9]{1,19}$")
# No whitespace and no control characters (PostgreSQL text cannot hold NUL).
_EMAIL_RE = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]{1,255}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_]{1,128}$")
UNSET: Any = object()
# Integers without their own bound still fit a signed 64-bit column (and JSON's safe range).
MAX_INT = 2**53 - 1


@dataclass(frozen=True)
class Param:
    kind: str  # str | int | bool | enum | amount | currency | email | id | metadata | dict | list
    required: bool = False
    max_length: int = 5000
    choices: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    fields: Mapping[str, Param] = field(default_factory=dict)  # for kind="dict"
    item: Param | None = None  # for kind="list"
    max_items: int = 100
    nullable: bool = False  # "" unsets (update endpoints)
    check: Callable[[Any, str], Any] | None = None


# A run of 12+ digits, possibly with spaces or dashes: it could be a card number.
_PAN_LIKE = re.compile(r"\d(?:[ -]?\d){11,}")


def _redact(text: str, *, luhn_only: bool) -> str:
    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", m.group(0))
        if luhn_only and not (len(digits) <= 19 and luhn_valid(digits)):
            return m.group(0)
        return "[redacted]"

    return _PAN_LIKE.sub(sub, text)


def _bad(param: str, message: str, code: str = "parameter_invalid_string") -> ParameterError:
    # Names and values are echoed for clarity, but never a card number (a
    # merchant may put one in the wrong field): in messages, any run of digits
    # that is a valid card number; in the param name, any long run of digits.
    return ParameterError(
        _redact(message, luhn_only=True), param=_redact(param, luhn_only=False), code=code
    )


def validate(
    params: Mapping[str, Any], spec: Mapping[str, Param], prefix: str = ""
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in params:
        if key not in spec:
            name = f"{prefix}[{key}]" if prefix else key
            raise _bad(name, f"Received unknown parameter: {_clip(name)}", "parameter_unknown")
    for key, p in spec.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in params:
            if p.required:
                raise _bad(name, f"Missing required param: {name}.", "parameter_missing")
            continue
        out[key] = _coerce(params[key], p, name)
    return out


def _clip(s: str) -> str:
    return s if len(s) <= 80 else s[:80] + "…"


def _coerce(value: Any, p: Param, name: str) -> Any:
    if value is None or (value == "" and p.kind not in ("str", "metadata")):
        if p.required and not p.nullable:
            raise _bad(name, f"Missing required param: {name}.", "parameter_missing")
        return None
    if value == "" and p.kind == "metadata":
        return {}  # Stripe: metadata="" clears all keys
    if value == "" and p.kind == "str" and p.nullable:
        return None
    kind = p.kind
    if kind == "str":
        if not isinstance(value, str):
            raise _bad(name, f"Invalid string: {name} must be a string.")
        if len(value) > p.max_length:
            raise _bad(name, f"Invalid string: {name} must be at most {p.max_length} characters.")
        if "\x00" in value:
            raise _bad(name, f"Invalid string: {name} contains a NUL character.")
        return p.check(value, name) if p.check else value
    if kind == "id":
        if not isinstance(value, str) or not _ID_RE.fullmatch(value):
            raise _bad(name, f"Invalid {name}: must be an object id.", "resource_missing")
        return value
    if kind in ("int", "amount"):
        return _int(value, p, name)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if value in ("true", "false"):
            return value == "true"
        raise _bad(name, f"Invalid boolean: {name} must be true or false.")
    if kind == "enum":
        if not isinstance(value, str) or value not in p.choices:
            opts = ", ".join(f"`{c}`" for c in p.choices)
            raise _bad(name, f"Invalid {name}: must be one of {opts}.")
        return value
    if kind == "currency":
        if not isinstance(value, str):
            raise _bad(name, "Invalid currency.")
        try:
            return normalize_currency(value)
        except CurrencyError:
            raise _bad(
                name,
                f"Invalid currency: {_clip(value.lower())}. It must be a supported ISO 4217 code.",
            ) from None
    if kind == "email":
        if not isinstance(value, str) or len(value) > 512 or not _EMAIL_RE.fullmatch(value):
            raise _bad(name, f"Invalid email address: {name}.", "email_invalid")
        return value
    if kind == "metadata":
        return _metadata(value, name)
    if kind == "dict":
        if not isinstance(value, dict):
            raise _bad(name, f"Invalid object: {name} must be a hash.")
        return validate(value, p.fields, name)
    if kind == "list":
        if isinstance(value, str) and p.item is not None:
            value = [value]
        if not isinstance(value, list):
            raise _bad(name, f"Invalid array: {name} must be an array.")
        if len(value) > p.max_items:
            raise _bad(name, f"Invalid array: {name} may have at most {p.max_items} items.")
        assert p.item is not None
        return [_coerce(v, p.item, f"{name}[{i}]") for i, v in enumerate(value)]
    raise AssertionError(f"unknown param kind {kind}")


def _int(value: Any, p: Param, name: str) -> int:
    if isinstance(value, bool):
        raise _bad(
            name, f"Invalid integer: {name} must be an integer.", "parameter_invalid_integer"
        )
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value):
        n = int(value)
    else:
        raise _bad(name, f"Invalid integer: {_clip(str(value))}", "parameter_invalid_integer")
    if p.kind == "amount":
        lo = 1 if p.min is None else p.min
        if n < lo:
            raise _bad(name, f"Invalid {name}: must be at least {lo}.", "amount_too_small")
        if n > MAX_AMOUNT:
            raise _bad(name, f"Invalid {name}: must be at most {MAX_AMOUNT}.", "amount_too_large")
        return n
    hi = p.max if p.max is not None else MAX_INT
    if p.min is not None and n < p.min:
        raise _bad(name, f"Invalid {name}: must be at least {p.min}.", "parameter_invalid_integer")
    if n > hi:
        raise _bad(name, f"Invalid {name}: must be at most {hi}.", "parameter_invalid_integer")
    return n


def _metadata(value: Any, name: str) -> dict[str, str | None]:
    if not isinstance(value, dict):
        raise _bad(name, "Invalid metadata: must be a hash of string keys to string values.")
    if len(value) > 50:
        raise _bad(name, "Invalid metadata: at most 50 keys are allowed.")
    out: dict[str, str | None] = {}
    for k, v in value.items():
        if len(k) > 40 or "[" in k or "]" in k:
            raise _bad(
                f"{name}[{_clip(k)}]", "Invalid metadata key: keys are at most 40 characters."
            )
        if v is None or v == "":
            out[k] = None  # Stripe: an empty value deletes the key
            continue
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise _bad(f"{name}[{k}]", "Invalid metadata value: values must be strings.")
        sv = str(v)
        if len(sv) > 500:
            raise _bad(f"{name}[{k}]", "Invalid metadata value: values are at most 500 characters.")
        out[k] = sv
    return out


def merge_metadata(
    current: Mapping[str, str], update: Mapping[str, str | None] | None
) -> dict[str, str]:
    """Stripe's metadata update: keys set to "" are removed, others replaced."""
    if update is None:
        return dict(current)
    if not update:
        return {}
    merged = dict(current)
    for k, v in update.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    if len(merged) > 50:
        raise _bad("metadata", "Invalid metadata: at most 50 keys are allowed.")
    return merged


PAGINATION: dict[str, Param] = {
    "limit": Param("int", min=1, max=100),
    "starting_after": Param("id"),
    "ending_before": Param("id"),
    "expand": Param("list", item=Param("str", max_length=200)),
    "created": Param(
        "dict",
        fields={
            "gt": Param("int", min=0),
            "gte": Param("int", min=0),
            "lt": Param("int", min=0),
            "lte": Param("int", min=0),
        },
    ),
}

EXPAND: dict[str, Param] = {"expand": Param("list", item=Param("str", max_length=200))}
