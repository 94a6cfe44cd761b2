"""Compile a rule's syntax tree into nested closures and evaluate it.

Each node becomes one small Python function, built once per rule, so matching
a payment costs a few function calls and dictionary look-ups (no tree walk, no
``eval``). Closures answer in three-valued logic, like Radar since May 2024:
``True``, ``False`` or ``None`` ("unknown") when an attribute is missing, is
``None``, or holds a value of the wrong kind (a number compared with a
string, a NaN, an object the language does not know). ``not``, ``and`` and
``or`` follow Kleene's rules (``not unknown`` is unknown, ``false and unknown``
is false, ``true or unknown`` is true), and a rule matches only when its
condition is ``True``. ``is_missing(:x:)`` is the one way to test for absence.

Attribute values are normalized before comparison: ``int`` and ``Decimal``
are numbers, a ``float`` is read through its shortest ``repr`` (so ``0.3``
equals the literal ``0.3``), ``bool`` is a boolean and never a number, ``str``
is a string. Nothing here raises on any attribute value.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Collection, Mapping
from decimal import Decimal
from typing import Any, Final, TypeAlias

from paywarden.fraud.rules_ast import (
    And,
    Attr,
    BoolLit,
    Compare,
    Expr,
    InList,
    InSet,
    IsMissing,
    Not,
    NumLit,
    Operand,
    StrLit,
    Truthy,
    lit_kind,
)

Attributes: TypeAlias = Mapping[str, Any]
Lists: TypeAlias = Mapping[str, Collection[str]]
Matcher: TypeAlias = Callable[[Attributes, Lists], bool | None]
_Getter: TypeAlias = Callable[[Attributes], tuple[str, object] | None]

_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_EQUALITY: Final = frozenset({"=", "!="})


def as_number(value: object) -> int | Decimal | None:
    """``value`` as an exact number, or ``None`` if it is not one (bools are not numbers)."""
    kind = type(value)
    if kind is int:
        return value  # type: ignore[return-value]
    if kind is Decimal:
        return None if value.is_nan() else value  # type: ignore[attr-defined,return-value]
    if value is None or kind is bool or kind is str:
        return None
    # Subclasses are read through the base type so no overridden method runs.
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, Decimal):
        return None if Decimal.is_nan(value) else Decimal(value)
    if isinstance(value, float):
        return None if math.isnan(value) else Decimal(float.__repr__(value))
    return None


def as_string(value: object) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return None


def as_boolean(value: object) -> bool | None:
    return value if type(value) is bool else None


def classify(value: object) -> tuple[str, object] | None:
    """``(kind, normalized value)`` of an attribute value, or ``None`` when it has no kind."""
    if (text := as_string(value)) is not None:
        return "string", text
    if (flag := as_boolean(value)) is not None:
        return "boolean", flag
    if (number := as_number(value)) is not None:
        return "number", number
    return None


def compile_expr(expr: Expr) -> Matcher:
    """A function ``(attributes, lists) -> True | False | None`` evaluating ``expr``."""
    if isinstance(expr, Compare):
        return _compare(expr)
    if isinstance(expr, InList):
        return _in_list(expr)
    if isinstance(expr, InSet):
        return _in_set(expr)
    if isinstance(expr, IsMissing):
        name = expr.attr.name
        return lambda attributes, _lists: attributes.get(name) is None
    if isinstance(expr, Truthy):
        name = expr.attr.name
        return lambda attributes, _lists: as_boolean(attributes.get(name))
    if isinstance(expr, Not):
        return _not(compile_expr(expr.operand))
    if isinstance(expr, And):
        return _and(tuple(compile_expr(operand) for operand in expr.operands))
    return _or(tuple(compile_expr(operand) for operand in expr.operands))


def _not(inner: Matcher) -> Matcher:
    def match(attributes: Attributes, lists: Lists) -> bool | None:
        result = inner(attributes, lists)
        return None if result is None else not result

    return match


def _and(operands: tuple[Matcher, ...]) -> Matcher:
    def match(attributes: Attributes, lists: Lists) -> bool | None:
        unknown = False
        for operand in operands:
            result = operand(attributes, lists)
            if result is False:
                return False
            if result is None:
                unknown = True
        return None if unknown else True

    return match


def _or(operands: tuple[Matcher, ...]) -> Matcher:
    def match(attributes: Attributes, lists: Lists) -> bool | None:
        unknown = False
        for operand in operands:
            result = operand(attributes, lists)
            if result is True:
                return True
            if result is None:
                unknown = True
        return None if unknown else False

    return match


def _getter(operand: Operand) -> _Getter:
    if isinstance(operand, Attr):
        name = operand.name
        return lambda attributes: classify(attributes.get(name))
    constant = (lit_kind(operand), operand.value)
    return lambda _attributes: constant


def _compare(expr: Compare) -> Matcher:
    compare = _OPS[expr.op]
    left, right = expr.left, expr.right
    # Fast paths for the common shape `:attribute: op literal`.
    if isinstance(left, Attr) and isinstance(right, NumLit):
        return _attr_vs_number(left.name, compare, right.value)
    if isinstance(left, Attr) and isinstance(right, StrLit | BoolLit) and expr.op in _EQUALITY:
        convert = as_string if isinstance(right, StrLit) else as_boolean
        return _attr_vs_constant(left.name, compare, right.value, convert)
    return _generic_compare(_getter(left), expr.op, _getter(right))


def _attr_vs_number(name: str, compare: Callable[[Any, Any], bool], literal: object) -> Matcher:
    def match(attributes: Attributes, _lists: Lists) -> bool | None:
        value = attributes.get(name)
        if type(value) is not int:
            value = as_number(value)
            if value is None:
                return None
        return compare(value, literal)

    return match


def _attr_vs_constant(
    name: str,
    compare: Callable[[Any, Any], bool],
    literal: object,
    convert: Callable[[object], object | None],
) -> Matcher:
    def match(attributes: Attributes, _lists: Lists) -> bool | None:
        value = convert(attributes.get(name))
        return None if value is None else compare(value, literal)

    return match


def _generic_compare(left: _Getter, op: str, right: _Getter) -> Matcher:
    compare = _OPS[op]
    ordering = op not in _EQUALITY

    def match(attributes: Attributes, _lists: Lists) -> bool | None:
        lhs, rhs = left(attributes), right(attributes)
        if lhs is None or rhs is None or lhs[0] != rhs[0]:
            return None  # missing, or a type error: unknown, never a match
        if ordering and lhs[0] != "number":
            return None
        return compare(lhs[1], rhs[1])

    return match


def _in_list(expr: InList) -> Matcher:
    get, list_name, negated = _getter(expr.operand), expr.list_name, expr.negated

    def match(attributes: Attributes, lists: Lists) -> bool | None:
        value = get(attributes)
        if value is None or value[0] != "string":
            return None
        members = lists.get(list_name)
        if members is None:
            return negated  # a list nobody provided is empty
        return (value[1] in members) != negated

    return match


def _in_set(expr: InSet) -> Matcher:
    get, negated = _getter(expr.operand), expr.negated
    kind = lit_kind(expr.values[0])
    members = frozenset(value.value for value in expr.values)

    def match(attributes: Attributes, _lists: Lists) -> bool | None:
        value = get(attributes)
        if value is None or value[0] != kind:
            return None
        return (value[1] in members) != negated

    return match
