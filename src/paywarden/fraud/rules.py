"""Fraud rules: a small, safe language in the form of Stripe Radar's rules.

A fraud analyst writes one rule per line::

    Block if :card_country: != :ip_country: and :amount_in_usd: > 500
    Review if :card_count_for_ip_address_daily: > 3
    Request 3DS if :risk_level: = 'elevated'
    Allow if :customer: in @trusted_customers

``parse_rule`` turns the text into an immutable :class:`Rule` (or raises
:class:`RuleSyntaxError`, whose ``pointer()`` draws a caret under the mistake),
``evaluate`` matches one rule against a payment's attributes, and ``decide``
applies a rule set in Radar's order. The parser is a hand-written tokenizer
and recursive-descent parser: no Python is ever evaluated.

Grammar (ISO EBNF; whitespace, including newlines, may separate any tokens)::

    rule        = action , "if" , condition ;
    action      = "allow" | "block" | "review" | "request" , "3ds" ;
    condition   = conjunction , { "or" , conjunction } ;
    conjunction = negation , { "and" , negation } ;
    negation    = "not" , negation | primary ;
    primary     = "(" , condition , ")"
                | "is_missing" , "(" , attribute , ")"
                | operand , compare_op , operand
                | operand , [ "not" ] , "in" , ( list | literal_set )
                | attribute ;                      (* a boolean attribute alone *)
    literal_set = "(" , literal , { "," , literal } , ")" ;
    operand     = attribute | literal ;
    compare_op  = "=" | "!=" | "<" | "<=" | ">" | ">=" ;
    attribute   = ":" , name , ":" ;
    list        = "@" , name ;
    literal     = string | number | "true" | "false" ;
    name        = ( letter | "_" ) , { letter | digit | "_" } ;   (* ASCII, <= 64 *)
    string      = "'" , { ? any character but ' and \\ ? | "\\'" | "\\\\" } , "'" ;
    number      = [ "-" ] , digit , { digit } , [ "." , digit , { digit } ] ;

Keywords (actions, ``if``, ``and``, ``or``, ``not``, ``in``, ``true``,
``false``, ``is_missing``) are case-insensitive; attribute and list names are
case-sensitive. Precedence, tightest first: comparison, ``not``, ``and``,
``or``. Integers parse as ``int`` and decimals as ``decimal.Decimal``, never
``float``. Ordering operators (``<`` ...) compare numbers only; a literal set
holds one kind of literal.

Limits (hostile input cannot exhaust the stack or memory): a rule is at most
``MAX_RULE_LENGTH`` (1,000) characters, parentheses and ``not`` nest at most
``MAX_NESTING_DEPTH`` (32) deep, a literal set holds at most ``MAX_SET_SIZE``
(100) values.

Semantics (see :mod:`paywarden.fraud.rules_eval`): a missing or ``None``
attribute, and a value of the wrong kind, make a comparison *unknown*; logic is
three-valued (Kleene) and a rule matches only when its condition is true, so
``Block if not :email_domain: = 'x.com'`` does not match a payment without an
email domain (Radar's behaviour since May 2024). ``is_missing(:x:)`` tests
for absence. A list that ``lists`` does not provide is empty.

When the caller knows the attributes (``known_attributes``), their types
(``attribute_types``) or the lists (``known_lists``), ``parse_rule`` refuses
unknown names and kind mismatches such as ``:amount_in_usd: > 'abc'`` with a
pointed error instead of a rule that silently never matches.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias

from paywarden.fraud.rules_ast import (
    ACTION_ORDER,
    ACTION_SOURCE,
    Action,
    And,
    Attr,
    BoolLit,
    Compare,
    CompareOp,
    Expr,
    InList,
    InSet,
    IsMissing,
    Lit,
    Not,
    NumLit,
    Operand,
    Or,
    StrLit,
    Truthy,
    format_expr,
)
from paywarden.fraud.rules_eval import Matcher, compile_expr
from paywarden.fraud.rules_parser import (
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
    MAX_SET_SIZE,
    RuleSyntaxError,
    parse_source,
)

__all__ = [
    "MAX_NESTING_DEPTH",
    "MAX_RULE_LENGTH",
    "MAX_SET_SIZE",
    "Action",
    "And",
    "Attr",
    "BoolLit",
    "Compare",
    "CompareOp",
    "Expr",
    "InList",
    "InSet",
    "IsMissing",
    "Lit",
    "Not",
    "NumLit",
    "Operand",
    "Or",
    "Rule",
    "RuleSyntaxError",
    "RuleVerdict",
    "StrLit",
    "Truthy",
    "decide",
    "evaluate",
    "format_expr",
    "parse_rule",
]

VerdictAction: TypeAlias = Literal["request_3ds", "allow", "block", "review", "none"]

_NO_LISTS: Final[Mapping[str, Collection[str]]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Rule:
    """One parsed rule: its action, the text it came from and its condition.

    Built by :func:`parse_rule`; building one directly from a tree is allowed
    (the tree is compiled here, once).
    """

    action: Action
    source: str
    expr: Expr
    _matcher: Matcher = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.action not in ACTION_SOURCE:
            raise ValueError(f"unknown rule action {self.action!r}")
        object.__setattr__(self, "_matcher", compile_expr(self.expr))

    def __reduce__(self) -> tuple[type[Rule], tuple[Action, str, Expr]]:
        # The compiled closure cannot be pickled; rebuild it from the tree instead.
        return (Rule, (self.action, self.source, self.expr))

    def to_source(self) -> str:
        """Canonical text of this rule; ``parse_rule`` of it gives an equal ``expr``."""
        return f"{ACTION_SOURCE[self.action]} if {format_expr(self.expr)}"


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """What a rule set decided: the winning action and rule, and matching shadow rules.

    ``review_after_3ds`` is the review rule that holds a payment once its 3-D
    Secure authentication (``action == "request_3ds"``) has succeeded.
    """

    action: VerdictAction
    rule: Rule | None
    shadow_hits: tuple[Rule, ...] = ()
    review_after_3ds: Rule | None = None


def parse_rule(
    source: str,
    *,
    known_attributes: Collection[str] | None = None,
    attribute_types: Mapping[str, type] | None = None,
    known_lists: Collection[str] | None = None,
) -> Rule:
    """Parse one rule, or raise :class:`RuleSyntaxError` pointing at the mistake.

    ``known_attributes`` / ``known_lists``: when given, any other name is an
    error. ``attribute_types`` maps names to ``str``, ``int``, ``Decimal``,
    ``float`` or ``bool`` and turns kind mismatches into errors (a mapping with
    any other type is a programming error: ``TypeError``).
    """
    action, expr = parse_source(
        source,
        known_attributes=known_attributes,
        attribute_types=attribute_types,
        known_lists=known_lists,
    )
    return Rule(action=action, source=source, expr=expr)


def evaluate(
    rule: Rule,
    *,
    attributes: Mapping[str, Any],
    lists: Mapping[str, Collection[str]] | None = None,
) -> bool:
    """Whether ``rule`` matches a payment with these attributes; never raises on values.

    ``lists`` maps list names (without ``@``) to their items; pass sets for
    speed. A list that is not provided is empty.
    """
    return rule._matcher(attributes, _NO_LISTS if lists is None else lists) is True


def decide(
    rules: Iterable[tuple[Rule, bool]],
    *,
    attributes: Mapping[str, Any],
    lists: Mapping[str, Collection[str]] | None = None,
) -> RuleVerdict:
    """Apply a rule set in Radar's order: request 3DS, allow, block, review.

    ``rules`` pairs each rule with ``shadow`` (log-only) mode. Among active
    rules, the first matching one in each action group counts. The allow,
    block and review groups are exclusive in that order: an allowed payment is
    never blocked or reviewed, a blocked one never reviewed.

    A request for 3-D Secure does not skip them: as in Radar, they still apply
    to the payment once authenticated. Nothing a rule reads changes with the
    authentication, so a payment a block rule matches is blocked at once (the
    verdict is ``block``: the customer is not put through a challenge that
    cannot help). One a review rule matches is authenticated and then held
    (``request_3ds`` with ``review_after_3ds``).

    Shadow rules are all evaluated and those that match are reported in
    ``shadow_hits`` (in input order) but never change the action. With no
    match the action is ``"none"``.
    """
    given = _NO_LISTS if lists is None else lists
    active: dict[Action, list[Rule]] = {action: [] for action in ACTION_ORDER}
    shadow_hits: list[Rule] = []
    for rule, shadow in rules:
        if not shadow:
            active[rule.action].append(rule)
        elif rule._matcher(attributes, given) is True:
            shadow_hits.append(rule)
    hits = tuple(shadow_hits)
    three_ds: Rule | None = None
    for action in ACTION_ORDER:
        for rule in active[action]:
            if rule._matcher(attributes, given) is not True:
                continue
            if action == "request_3ds":
                three_ds = rule
                break
            if three_ds is None or action == "block":
                return RuleVerdict(action=action, rule=rule, shadow_hits=hits)
            review = rule if action == "review" else None
            return RuleVerdict(
                action="request_3ds", rule=three_ds, shadow_hits=hits, review_after_3ds=review
            )
    if three_ds is not None:
        return RuleVerdict(action="request_3ds", rule=three_ds, shadow_hits=hits)
    return RuleVerdict(action="none", rule=None, shadow_hits=hits)
