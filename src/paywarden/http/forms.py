"""Stripe's form encoding: ``a[b]=1``, ``a[0]=x``, ``a[]=y``; JSON is accepted too.

The decoder is strict and bounded: depth, key count and key length are capped,
and index lists must be dense, so a hostile body costs little and fails cleanly.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from paywarden.core.errors import InvalidRequestError

MAX_DEPTH = 5
MAX_KEYS = 1000
MAX_KEY_LENGTH = 200
_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")
# Array indices are canonical ASCII decimals ("0", "1", … no "01", no "²").
_INDEX_RE = re.compile(r"0|[1-9][0-9]{0,5}")


def _is_index(part: str) -> bool:
    return _INDEX_RE.fullmatch(part) is not None


def _malformed(msg: str) -> InvalidRequestError:
    return InvalidRequestError(msg, code="parameter_invalid_string")


def decode_form(body: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(
            body,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_KEYS,
            errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise _malformed("The request contains percent-escapes that are not valid UTF-8.") from exc
    except ValueError as exc:
        raise _malformed("Too many parameters in the request body.") from exc
    return build_nested(pairs)


def build_nested(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for raw_key, value in pairs:
        if len(raw_key) > MAX_KEY_LENGTH:
            raise _malformed("A parameter name is too long.")
        m = _KEY_RE.fullmatch(raw_key)
        if not m:
            raise _malformed(f"Invalid parameter name: {_echo(raw_key)!r}.")
        parts = [m.group(1), *_PART_RE.findall(m.group(2))]
        if len(parts) > MAX_DEPTH:
            raise _malformed(f"Parameter {_echo(m.group(1))!r} is nested too deeply.")
        _insert(root, parts, value, raw_key)
    out: dict[str, Any] = _densify(root, "")
    return out


def _echo(raw_key: str) -> str:
    """A parameter name fit to quote back: a malformed name may carry a card
    number (``card[number]4242…`` without ``=``), so one holding a run of digits
    is shown only up to its first bracket."""
    if sum(ch.isdigit() for ch in raw_key) >= 6:
        return raw_key.split("[", 1)[0][:40] + "[…]"
    return raw_key[:60]


class _Appendable(dict[str, Any]):
    """Marks a container built from ``[]`` / numeric indices (becomes a list)."""


def _insert(node: dict[str, Any], parts: list[str], value: str, raw_key: str) -> None:
    for i, raw_part in enumerate(parts):
        last = i == len(parts) - 1
        part = raw_part
        if part == "":
            if not isinstance(node, _Appendable):
                raise _malformed(f"Invalid array parameter: {_echo(raw_key)!r}.")
            part = f"#{len(node)}"
        if last:
            if part in node:
                raise _malformed(f"Parameter {_echo(raw_key)!r} was given more than once.")
            node[part] = value
            return
        nxt = parts[i + 1]
        want_list = nxt == "" or _is_index(nxt)
        child = node.get(part)
        if child is None:
            child = _Appendable() if want_list else {}
            node[part] = child
        elif not isinstance(child, dict) or isinstance(child, _Appendable) != want_list:
            raise _malformed(f"Parameter {_echo(raw_key)!r} mixes incompatible types.")
        node = child


def _densify(node: Any, path: str) -> Any:
    if isinstance(node, _Appendable):
        if all(k.startswith("#") for k in node):
            return [_densify(v, path) for v in node.values()]
        if not all(_is_index(k) for k in node):
            raise _malformed(f"Parameter {_echo(path)!r} mixes array styles.")
        idx = sorted(int(k) for k in node)
        if idx != list(range(len(idx))):
            raise _malformed(f"Array parameter {_echo(path)!r} must be indexed 0..n-1.")
        return [_densify(node[str(i)], f"{path}[{i}]") for i in idx]
    if isinstance(node, dict):
        return {k: _densify(v, f"{path}[{k}]" if path else k) for k, v in node.items()}
    return node


def decode_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, parse_float=_no_floats, parse_constant=_no_floats)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequestError(
            "Invalid JSON in the request body.", code="parameter_invalid_string"
        ) from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("The JSON body must be an object.")
    _check_depth(data, 0)
    return data


def _no_floats(text: str) -> Any:
    # Money is integer minor units: a float anywhere in the body is rejected.
    raise ValueError("floats are not accepted")


def _check_depth(node: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidRequestError("The JSON body is nested too deeply.")
    if isinstance(node, dict):
        if len(node) > MAX_KEYS:
            raise InvalidRequestError("Too many parameters in the request body.")
        for v in node.values():
            _check_depth(v, depth + 1)
    elif isinstance(node, list):
        if len(node) > MAX_KEYS:
            raise InvalidRequestError("Too many parameters in the request body.")
        for v in node:
            _check_depth(v, depth + 1)
