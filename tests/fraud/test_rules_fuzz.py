"""Fuzzing the rules language with hypothesis.

1. Any text -- random, token soup, or a valid rule with bytes mutated -- either
   parses or raises ``RuleSyntaxError``; nothing else escapes.
2. Generated syntax trees printed back to source parse to the same tree.
3. Evaluation never raises, whatever the attribute values.

Example counts are moderate and derandomized so the file runs in seconds and
the same way on every CI run.
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from paywarden.fraud.rules import (
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
    And,
    Attr,
    BoolLit,
    Compare,
    Expr,
    InList,
    InSet,
    IsMissing,
    Lit,
    Not,
    NumLit,
    Operand,
    Or,
    Rule,
    RuleSyntaxError,
    StrLit,
    Truthy,
    decide,
    evaluate,
    parse_rule,
)

FUZZ = settings(max_examples=300, derandomize=True, database=None, deadline=None)

# -- strategies -------------------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
FEW_NAMES = st.sampled_from(["amount", "country", "flag", "email", "count"])
LIST_NAMES = st.sampled_from(["trusted", "blocked", "absent"])

STRINGS = st.builds(StrLit, st.text(max_size=8))
NUMBERS = st.builds(
    NumLit,
    st.integers(-(10**12), 10**12)
    | st.decimals(
        min_value=Decimal("-1e9"), max_value=Decimal("1e9"), allow_nan=False, allow_infinity=False
    ),
)
BOOLEANS = st.builds(BoolLit, st.booleans())
LITERALS: dict[str, st.SearchStrategy[Lit]] = {
    "string": STRINGS,
    "number": NUMBERS,
    "boolean": BOOLEANS,
}


def operands(names: st.SearchStrategy[str], kind: str) -> st.SearchStrategy[Operand]:
    return st.builds(Attr, names) | LITERALS[kind]


@st.composite
def compares(draw: st.DrawFn, names: st.SearchStrategy[str]) -> Compare:
    op = draw(st.sampled_from(["=", "!=", "<", "<=", ">", ">="]))
    kind = "number" if op in {"<", "<=", ">", ">="} else draw(st.sampled_from(sorted(LITERALS)))
    return Compare(draw(operands(names, kind)), op, draw(operands(names, kind)))  # type: ignore[arg-type]


@st.composite
def in_sets(draw: st.DrawFn, names: st.SearchStrategy[str]) -> InSet:
    kind = draw(st.sampled_from(sorted(LITERALS)))
    values = draw(st.lists(LITERALS[kind], min_size=1, max_size=4))
    return InSet(draw(operands(names, kind)), tuple(values), draw(st.booleans()))


def conditions(names: st.SearchStrategy[str]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        compares(names),
        in_sets(names),
        st.builds(InList, operands(names, "string"), LIST_NAMES | NAMES, st.booleans()),
        st.builds(IsMissing, st.builds(Attr, names)),
        st.builds(Truthy, st.builds(Attr, names)),
    )


def expressions(names: st.SearchStrategy[str]) -> st.SearchStrategy[Expr]:
    def extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        many = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(st.builds(Not, children), st.builds(And, many), st.builds(Or, many))

    return st.recursive(conditions(names), extend, max_leaves=8)


ACTIONS = st.sampled_from(["allow", "block", "review", "request_3ds"])


def nesting(expr: Expr) -> int:
    """How deep the printed form nests parentheses and `not` (an upper bound)."""
    if isinstance(expr, Not):
        return 2 + nesting(expr.operand)
    if isinstance(expr, And | Or):
        return 1 + max(nesting(operand) for operand in expr.operands)
    return 0


TOKENS = st.sampled_from(
    [
        "Allow", "Block", "Review", "Request", "3DS", "if", "IF", "and", "or", "not", "NOT",
        "in", "true", "false", "is_missing", "(", ")", ",", "=", "!=", "<", "<=", ">", ">=",
        ":amount:", ":country:", ":a", "@trusted", "@", "'x'", "'", "\\'", "0.5", "-3", "12",
        "1.", "--", '"', "==", "!", ":", "\n", "\t", "\x00", "é", "\\",
    ]
)  # fmt: skip
SOUP = st.lists(TOKENS, max_size=30).map(" ".join) | st.lists(TOKENS, max_size=30).map("".join)
SEEDS = st.sampled_from(
    [
        "Block if :card_country: != :ip_country: and :amount_in_usd: > 500",
        "Review if :card_count_for_ip_address_daily: > 3",
        "Request 3DS if :risk_level: = 'elevated'",
        "Allow if :customer: in @trusted_customers",
        "Block if not (:a: = -1.5 or :b: not in ('x', 'y\\'z')) and is_missing(:c:)",
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(SEEDS)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(TOKENS | st.characters())
        if action == "insert":
            text = text[:at] + piece + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + piece + text[at + 1 :]
    return text


# -- 1. nothing but RuleSyntaxError ---------------------------------------------------------


def check_error(error: RuleSyntaxError, source: str) -> None:
    assert 0 <= error.position <= len(source)
    assert error.message
    assert "^" in error.pointer()


def parse_or_syntax_error(source: str) -> None:
    try:
        rule = parse_rule(source)
    except RuleSyntaxError as error:
        check_error(error, source)
        return
    # Whatever parses also prints back to an equivalent rule.
    again = parse_rule(rule.to_source())
    assert (again.action, again.expr) == (rule.action, rule.expr)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_syntax_errors(source: str) -> None:
    parse_or_syntax_error(source)
    parse_or_syntax_error("Block if " + source)


@FUZZ
@given(SOUP)
def test_token_soup_raises_only_syntax_errors(source: str) -> None:
    parse_or_syntax_error(source)
    parse_or_syntax_error("Block if " + source)


@FUZZ
@given(mutated())
def test_mutated_rules_raise_only_syntax_errors(source: str) -> None:
    parse_or_syntax_error(source)


@settings(max_examples=30, derandomize=True, database=None, deadline=None)
@given(st.integers(0, 5000), st.sampled_from(["(", "not ", "( not "]))
def test_deep_or_long_input_is_refused_cleanly(count: int, piece: str) -> None:
    parse_or_syntax_error("Block if " + piece * count + ":a:" + ")" * count)


# -- 2. printing round trip -----------------------------------------------------------------


@FUZZ
@given(ACTIONS, expressions(NAMES))
def test_printed_trees_parse_back_to_the_same_tree(action: Any, expr: Expr) -> None:
    assume(nesting(expr) <= MAX_NESTING_DEPTH)
    source = Rule(action=action, source="", expr=expr).to_source()
    assume(len(source) <= MAX_RULE_LENGTH)
    parsed = parse_rule(source)
    assert parsed.action == action
    assert parsed.expr == expr
    assert parsed.to_source() == source


# -- 3. evaluation never raises -------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


class Weird:
    def __eq__(self, other: object) -> bool:
        raise RuntimeError("never compare me")

    __hash__ = object.__hash__


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.decimals(),  # includes NaN, sNaN and infinities
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.just(Colour.RED),
    st.builds(Weird),
    st.just(object()),
)


@FUZZ
@given(
    st.lists(st.tuples(ACTIONS, expressions(FEW_NAMES), st.booleans()), min_size=1, max_size=4),
    st.dictionaries(FEW_NAMES, ANY_VALUE),
    st.dictionaries(LIST_NAMES, st.frozensets(st.text(max_size=3), max_size=3)),
)
def test_evaluation_never_raises(
    specs: list[tuple[Any, Expr, bool]], attributes: dict[str, Any], lists: dict[str, Any]
) -> None:
    rules = [(Rule(action=action, source="", expr=expr), shadow) for action, expr, shadow in specs]
    for rule, _shadow in rules:
        assert evaluate(rule, attributes=attributes, lists=lists) in (True, False)
    verdict = decide(rules, attributes=attributes, lists=lists)
    assert verdict.action in ("request_3ds", "allow", "block", "review", "none")
    assert (verdict.rule is None) == (verdict.action == "none")
