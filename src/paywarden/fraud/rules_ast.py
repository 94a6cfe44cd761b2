"""The rules language's syntax tree: immutable nodes and the canonical printer.

Every node is a frozen dataclass, so a parsed rule can be shared between
threads, hashed and compared. Literals have one node type per kind
(``StrLit``, ``NumLit``, ``BoolLit``) so that ``1`` and ``true`` never compare
equal the way Python's ``1 == True`` would.

``format_expr`` prints a tree back as source in canonical form (lower-case
keywords, minimal parentheses); parsing that text gives the same tree. The
grammar itself is documented in :mod:`paywarden.fraud.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

Action: TypeAlias = Literal["request_3ds", "allow", "block", "review"]
CompareOp: TypeAlias = Literal["=", "!=", "<", "<=", ">", ">="]

# Radar's evaluation order: the first action group with a matching rule wins.
ACTION_ORDER: Final[tuple[Action, ...]] = ("request_3ds", "allow", "block", "review")
ACTION_SOURCE: Final[dict[Action, str]] = {
    "request_3ds": "Request 3DS",
    "allow": "Allow",
    "block": "Block",
    "review": "Review",
}
COMPARE_OPS: Final[tuple[CompareOp, ...]] = ("=", "!=", "<", "<=", ">", ">=")
ORDERING_OPS: Final[frozenset[str]] = frozenset({"<", "<=", ">", ">="})


@dataclass(frozen=True, slots=True)
class Attr:
    """A payment attribute, written ``:name:``."""

    name: str


@dataclass(frozen=True, slots=True)
class StrLit:
    """A string literal, written in single quotes."""

    value: str


@dataclass(frozen=True, slots=True)
class NumLit:
    """A number literal: ``int`` for ``42``, ``Decimal`` for ``4.2`` (never ``float``)."""

    value: int | Decimal


@dataclass(frozen=True, slots=True)
class BoolLit:
    """``true`` or ``false``."""

    value: bool


Lit: TypeAlias = StrLit | NumLit | BoolLit
Operand: TypeAlias = Attr | Lit


@dataclass(frozen=True, slots=True)
class Compare:
    """``left op right``."""

    left: Operand
    op: CompareOp
    right: Operand


@dataclass(frozen=True, slots=True)
class InList:
    """``operand [not] in @list_name`` -- membership in a managed list."""

    operand: Operand
    list_name: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class InSet:
    """``operand [not] in ('a', 'b')`` -- membership in a literal set (one kind of literal)."""

    operand: Operand
    values: tuple[Lit, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsMissing:
    """``is_missing(:name:)`` -- true when the attribute is absent or ``None``."""

    attr: Attr


@dataclass(frozen=True, slots=True)
class Truthy:
    """A bare boolean attribute used as a condition: ``Review if :is_anonymous_ip:``."""

    attr: Attr


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    """Two or more conditions joined by ``and`` (flattened: ``a and b and c`` is one node)."""

    operands: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Two or more conditions joined by ``or``."""

    operands: tuple[Expr, ...]


Expr: TypeAlias = Compare | InList | InSet | IsMissing | Truthy | Not | And | Or


def list_names(expr: Expr) -> frozenset[str]:
    """The managed lists (``@name``) a condition refers to."""
    if isinstance(expr, InList):
        return frozenset({expr.list_name})
    if isinstance(expr, Not):
        return list_names(expr.operand)
    if isinstance(expr, And | Or):
        return frozenset().union(*(list_names(e) for e in expr.operands))
    return frozenset()


def lit_kind(lit: Lit) -> str:
    """The kind of a literal: ``"string"``, ``"number"`` or ``"boolean"``."""
    if isinstance(lit, StrLit):
        return "string"
    if isinstance(lit, NumLit):
        return "number"
    return "boolean"


def format_literal(lit: Lit) -> str:
    if isinstance(lit, StrLit):
        escaped = lit.value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(lit, BoolLit):
        return "true" if lit.value else "false"
    value = lit.value
    if isinstance(value, int):
        return str(value)
    # Plain notation, always with a point, so it parses back to a Decimal of equal value.
    text = format(value, "f")
    return text if "." in text else f"{text}.0"


def format_operand(operand: Operand) -> str:
    if isinstance(operand, Attr):
        return f":{operand.name}:"
    return format_literal(operand)


def format_expr(expr: Expr) -> str:
    """Canonical source text of ``expr``; parsing it yields an equal tree."""
    if isinstance(expr, Compare):
        return f"{format_operand(expr.left)} {expr.op} {format_operand(expr.right)}"
    if isinstance(expr, InList):
        keyword = "not in" if expr.negated else "in"
        return f"{format_operand(expr.operand)} {keyword} @{expr.list_name}"
    if isinstance(expr, InSet):
        keyword = "not in" if expr.negated else "in"
        values = ", ".join(format_literal(value) for value in expr.values)
        return f"{format_operand(expr.operand)} {keyword} ({values})"
    if isinstance(expr, IsMissing):
        return f"is_missing(:{expr.attr.name}:)"
    if isinstance(expr, Truthy):
        return f":{expr.attr.name}:"
    if isinstance(expr, Not):
        inner = format_expr(expr.operand)
        return f"not ({inner})" if isinstance(expr.operand, And | Or) else f"not {inner}"
    if isinstance(expr, And):
        # A nested And/Or keeps its parentheses: the parser flattens `a and b and c`.
        return " and ".join(_joined(op, inside_and=True) for op in expr.operands)
    return " or ".join(_joined(op, inside_and=False) for op in expr.operands)


def _joined(expr: Expr, *, inside_and: bool) -> str:
    text = format_expr(expr)
    grouped = isinstance(expr, Or) or (inside_and and isinstance(expr, And))
    return f"({text})" if grouped else text
