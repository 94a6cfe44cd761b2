"""The fraud rules language: parsing, evaluation, errors that point, Radar's order."""

from __future__ import annotations

import ast
import dataclasses
import pickle
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import paywarden.fraud
from paywarden.fraud.rules import (
    MAX_NESTING_DEPTH,
    MAX_RULE_LENGTH,
    MAX_SET_SIZE,
    And,
    Attr,
    BoolLit,
    Compare,
    InList,
    InSet,
    IsMissing,
    Not,
    NumLit,
    Or,
    Rule,
    RuleSyntaxError,
    StrLit,
    Truthy,
    decide,
    evaluate,
    parse_rule,
)

EXAMPLES = {
    "block": "Block if :card_country: != :ip_country: and :amount_in_usd: > 500",
    "review": "Review if :card_count_for_ip_address_daily: > 3",
    "request_3ds": "Request 3DS if :risk_level: = 'elevated'",
    "allow": "Allow if :customer: in @trusted_customers",
}


def matches(source: str, lists: dict[str, frozenset[str]] | None = None, **attributes: Any) -> bool:
    return evaluate(parse_rule(source), attributes=attributes, lists=lists)


# -- the four examples --------------------------------------------------------------


def test_examples_parse_to_the_expected_trees() -> None:
    block = parse_rule(EXAMPLES["block"])
    assert block.action == "block"
    assert block.source == EXAMPLES["block"]
    assert block.expr == And(
        (
            Compare(Attr("card_country"), "!=", Attr("ip_country")),
            Compare(Attr("amount_in_usd"), ">", NumLit(500)),
        )
    )
    assert parse_rule(EXAMPLES["review"]).expr == Compare(
        Attr("card_count_for_ip_address_daily"), ">", NumLit(3)
    )
    three_ds = parse_rule(EXAMPLES["request_3ds"])
    assert three_ds.action == "request_3ds"
    assert three_ds.expr == Compare(Attr("risk_level"), "=", StrLit("elevated"))
    assert parse_rule(EXAMPLES["allow"]).expr == InList(Attr("customer"), "trusted_customers")


@pytest.mark.parametrize("action", sorted(EXAMPLES))
def test_examples_print_back_as_written(action: str) -> None:
    rule = parse_rule(EXAMPLES[action])
    assert rule.action == action
    assert rule.to_source() == EXAMPLES[action]


def test_block_example_evaluates() -> None:
    rule = EXAMPLES["block"]
    assert matches(rule, card_country="US", ip_country="FR", amount_in_usd=Decimal("500.01"))
    assert not matches(rule, card_country="US", ip_country="FR", amount_in_usd=500)
    assert not matches(rule, card_country="US", ip_country="US", amount_in_usd=9000)


def test_review_request_3ds_and_allow_examples_evaluate() -> None:
    assert matches(EXAMPLES["review"], card_count_for_ip_address_daily=4)
    assert not matches(EXAMPLES["review"], card_count_for_ip_address_daily=3)
    assert matches(EXAMPLES["request_3ds"], risk_level="elevated")
    assert not matches(EXAMPLES["request_3ds"], risk_level="normal")
    trusted = {"trusted_customers": frozenset({"cus_1"})}
    assert matches(EXAMPLES["allow"], trusted, customer="cus_1")
    assert not matches(EXAMPLES["allow"], trusted, customer="cus_2")


# -- precedence, parentheses, case ----------------------------------------------------


def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    rule = parse_rule("Block if not :a: or :b: and :c:")
    assert rule.expr == Or((Not(Truthy(Attr("a"))), And((Truthy(Attr("b")), Truthy(Attr("c"))))))
    # a=true, b=true, c=false: (not a) or (b and c) is false; not (a or b) and c also false;
    # the grouping that differs: (not a or b) and c.
    assert not evaluate(rule, attributes={"a": True, "b": True, "c": False})
    assert evaluate(rule, attributes={"a": False, "b": True, "c": False})


def test_not_applies_to_the_whole_comparison() -> None:
    assert parse_rule("Block if not :a: = 1").expr == Not(Compare(Attr("a"), "=", NumLit(1)))


def test_parentheses_change_grouping() -> None:
    grouped = parse_rule("Block if (:a: or :b:) and :c:")
    assert grouped.expr == And((Or((Truthy(Attr("a")), Truthy(Attr("b")))), Truthy(Attr("c"))))
    assert not evaluate(grouped, attributes={"a": True, "b": False, "c": False})
    assert evaluate(parse_rule("Block if :a: or :b: and :c:"), attributes={"a": True, "c": False})


def test_chains_flatten_and_nested_groups_survive() -> None:
    assert parse_rule("Block if :a: and :b: and :c:").expr == And(
        (Truthy(Attr("a")), Truthy(Attr("b")), Truthy(Attr("c")))
    )
    nested = parse_rule("Block if :a: and (:b: and :c:)")
    assert nested.expr == And((Truthy(Attr("a")), And((Truthy(Attr("b")), Truthy(Attr("c"))))))
    assert nested.to_source() == "Block if :a: and (:b: and :c:)"


def test_keywords_are_case_insensitive() -> None:
    shouty = parse_rule("BLOCK IF NOT :a: IN @l AND :b: In ('x') Or Is_Missing(:c:) OR :d: = TRUE")
    quiet = parse_rule("block if not :a: in @l and :b: in ('x') or is_missing(:c:) or :d: = true")
    assert shouty.expr == quiet.expr
    assert parse_rule("request 3ds if :a:").action == "request_3ds"
    assert parse_rule("ReQuEsT   3dS if :a:").action == "request_3ds"


def test_names_are_case_sensitive() -> None:
    assert parse_rule("Block if :Amount: > 1").expr != parse_rule("Block if :amount: > 1").expr


def test_whitespace_and_newlines_separate_tokens() -> None:
    rule = parse_rule("Block\n  if :a:>1\tand:b:='x'")
    assert rule.expr == And(
        (Compare(Attr("a"), ">", NumLit(1)), Compare(Attr("b"), "=", StrLit("x")))
    )


# -- literals ---------------------------------------------------------------------------


def test_decimals_parse_exactly_and_never_as_float() -> None:
    literal = parse_rule("Block if :amount: = 0.3").expr
    assert isinstance(literal, Compare)
    assert isinstance(literal.right, NumLit)
    assert type(literal.right.value) is Decimal
    assert literal.right.value == Decimal("0.3")
    integer = parse_rule("Block if :amount: = 3").expr
    assert isinstance(integer, Compare)
    assert isinstance(integer.right, NumLit)
    assert type(integer.right.value) is int


def test_decimal_comparisons_are_exact() -> None:
    rule = "Block if :amount: = 0.3"
    assert matches(rule, amount=Decimal("0.1") + Decimal("0.2"))
    assert matches(rule, amount=Decimal("0.30"))
    # A float attribute is read through its shortest repr: 0.3 is 0.3 ...
    assert matches(rule, amount=0.3)
    # ... and 0.1 + 0.2 (0.30000000000000004) is not, as it is not exactly 0.3.
    assert not matches(rule, amount=0.1 + 0.2)
    assert matches("Block if :amount: > 0.29999999999999999999", amount=Decimal("0.3"))
    assert matches("Block if :amount: < -1.5", amount=-2)


def test_strings_support_escaped_quotes_and_backslashes() -> None:
    rule = parse_rule(r"Block if :name: = 'O\'Brien \\ co'")
    assert rule.expr == Compare(Attr("name"), "=", StrLit("O'Brien \\ co"))
    assert parse_rule(rule.to_source()).expr == rule.expr
    assert matches("Block if :name: = ''", name="")


def test_booleans() -> None:
    assert matches("Review if :is_anonymous_ip:", is_anonymous_ip=True)
    assert not matches("Review if :is_anonymous_ip:", is_anonymous_ip=False)
    assert matches("Review if :is_anonymous_ip: = false", is_anonymous_ip=False)
    assert matches("Review if :is_anonymous_ip: != true", is_anonymous_ip=False)
    # A boolean is never a number (Python's True == 1 does not leak through).
    assert not matches("Review if :flag: = 1", flag=True)
    assert not matches("Review if :count: = true", count=1)
    assert not matches("Review if :flag:", flag=1)


# -- membership ---------------------------------------------------------------------------


def test_list_membership_and_negation() -> None:
    lists = {"blocked_ips": frozenset({"10.0.0.1"})}
    assert matches("Block if :ip: in @blocked_ips", lists, ip="10.0.0.1")
    assert not matches("Block if :ip: not in @blocked_ips", lists, ip="10.0.0.1")
    assert matches("Block if :ip: not in @blocked_ips", lists, ip="10.0.0.2")
    assert matches("Block if not :ip: in @blocked_ips", lists, ip="10.0.0.2")
    assert parse_rule("Block if :ip: not in @l").expr == InList(Attr("ip"), "l", negated=True)


def test_a_list_not_provided_is_empty() -> None:
    assert not matches("Block if :ip: in @nobody_sent_this", ip="10.0.0.1")
    assert matches("Block if :ip: not in @nobody_sent_this", ip="10.0.0.1")


def test_list_membership_needs_a_string() -> None:
    lists = {"numbers": frozenset({"5"})}
    assert not matches("Block if :n: in @numbers", lists, n=5)
    assert not matches("Block if :n: not in @numbers", lists, n=5)


def test_literal_sets() -> None:
    rule = "Block if :card_country: in ('NG', 'GH')"
    assert parse_rule(rule).expr == InSet(Attr("card_country"), (StrLit("NG"), StrLit("GH")))
    assert matches(rule, card_country="GH")
    assert not matches(rule, card_country="US")
    assert matches("Block if :card_country: NOT IN ('NG', 'GH')", card_country="US")
    assert matches("Block if :n: in (1, 2.5, 3)", n=Decimal("2.50"))
    assert not matches("Block if :n: in (1, 2)", n="1")
    assert not matches("Block if :n: in (1, 2)", n=True)


# -- missing values and type errors -------------------------------------------------------


def test_missing_attributes_never_match_comparisons() -> None:
    for rule in (
        "Block if :email_domain: = 'x.com'",
        "Block if :email_domain: != 'x.com'",
        "Block if :amount: > 1",
        "Block if :a: = :b:",
        "Block if :email_domain: in @l",
        "Block if :email_domain: not in @l",
        "Block if :email_domain: not in ('x.com')",
    ):
        assert not matches(rule), rule
        assert not matches(rule, email_domain=None, amount=None, a=None), rule


def test_not_of_a_missing_comparison_is_still_no_match() -> None:
    # Radar's 2024 semantics: missing stays unknown through `not`, so the rule does not match.
    assert not matches("Block if not :email_domain: = 'x.com'")
    assert not matches("Block if not (:email_domain: = 'x.com' and :a: = 1)", a=1)
    # ... unless the other side settles it.
    assert matches("Block if not (:email_domain: = 'x.com' and :a: = 1)", a=2)
    assert matches("Block if :email_domain: = 'x.com' or :a: = 1", a=1)


def test_is_missing() -> None:
    assert matches("Block if is_missing(:email:)")
    assert matches("Block if is_missing(:email:)", email=None)
    assert not matches("Block if is_missing(:email:)", email="a@b.c")
    rule = "Block if is_missing(:email_domain:) or not :email_domain: = 'notfraud.com'"
    assert matches(rule)
    assert matches(rule, email_domain="fraud.com")
    assert not matches(rule, email_domain="notfraud.com")


def test_mismatched_kinds_at_evaluation_are_no_match() -> None:
    assert not matches("Block if :amount: > 5", amount="lots")
    assert not matches("Block if not :amount: > 5", amount="lots")
    assert not matches("Block if :a: = :b:", a="1", b=1)
    assert not matches("Block if :a: < :b:", a="a", b="b")
    assert not matches("Block if :amount: > 5", amount=float("nan"))
    assert not matches("Block if :amount: > 5", amount=Decimal("NaN"))
    assert not matches("Block if :amount: > 5", amount=object())
    assert matches("Block if :amount: > 5", amount=float("inf"))
    assert matches("Block if :a: = :b:", a=Decimal("1.0"), b=1)


# -- parse-time checks with known names and types ------------------------------------------


def test_attribute_types_refuse_mismatched_comparisons() -> None:
    types = {"amount_in_usd": Decimal, "card_country": str, "is_anonymous_ip": bool}
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule("Block if :amount_in_usd: > 'abc'", attribute_types=types)
    assert info.value.column == len("Block if :amount_in_usd: > ")
    assert "'>' compares numbers" in info.value.message
    with pytest.raises(RuleSyntaxError, match="cannot compare :card_country:"):
        parse_rule("Block if :card_country: = 5", attribute_types=types)
    with pytest.raises(RuleSyntaxError, match="compares numbers, but :card_country:"):
        parse_rule("Block if :card_country: < 'US'", attribute_types=types)
    with pytest.raises(RuleSyntaxError, match="lists hold strings"):
        parse_rule("Block if :amount_in_usd: in @l", attribute_types=types)
    with pytest.raises(RuleSyntaxError, match="expected a number here"):
        parse_rule("Block if :amount_in_usd: in (1, 'x')", attribute_types=types)
    with pytest.raises(RuleSyntaxError, match="only boolean attributes stand alone"):
        parse_rule("Block if :card_country:", attribute_types=types)
    assert parse_rule("Block if :is_anonymous_ip: and :amount_in_usd: > 1", attribute_types=types)


def test_literal_kinds_are_checked_without_declared_types() -> None:
    with pytest.raises(RuleSyntaxError, match="compares numbers, but 'abc'"):
        parse_rule("Block if :amount: > 'abc'")
    with pytest.raises(RuleSyntaxError, match="cannot compare 1"):
        parse_rule("Block if 1 = 'a'")
    with pytest.raises(RuleSyntaxError, match="one kind of value"):
        parse_rule("Block if :a: in ('x', 1)")


def test_bad_attribute_types_mapping_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        parse_rule("Block if :a: = 1", attribute_types={"a": list})


def test_known_names() -> None:
    rule = parse_rule("Block if :ip: in @bad_ips", known_attributes={"ip"}, known_lists={"bad_ips"})
    assert rule.expr == InList(Attr("ip"), "bad_ips")
    with pytest.raises(RuleSyntaxError, match="unknown list @good_ips") as info:
        parse_rule("Block if :ip: in @good_ips", known_lists={"bad_ips"})
    assert info.value.column == len("Block if :ip: in ")


# -- errors that point at the mistake ------------------------------------------------------

ERRORS = [
    # (source, 0-based column of the caret, fragment of the message)
    ("Block if :amount > 5", 16, "expected ':' to close the attribute"),
    ("Block if :card_country: = 'US", 26, "unterminated string"),
    ("Deny if :a: = 1", 0, "unknown action 'Deny'"),
    ("Block :a: = 1", 6, "expected 'if' after the action"),
    ("Request if :a: = 1", 8, "expected '3DS' after 'Request'"),
    ("Block if :a: >", 14, "expected a value after '>'"),
    ("Block if :a: > 1 and", 20, "expected a condition after 'and'"),
    ("Block if :a: > 1 or or :b:", 20, "expected a condition after 'or'"),
    ("Block if (:a: > 1 and :b:", 25, "expected ')' to close the '(' at column 10"),
    ("Block if :a: > 1)", 16, "unbalanced ')'"),
    ("Block if :a: in @", 17, "expected a list name after '@'"),
    ("Block if :a: in @1bad", 17, "expected a list name after '@'"),
    ("Block if :a: in 'x'", 16, "expected @list_name or '(' after 'in'"),
    ('Block if :a: = "US"', 15, "single quotes"),
    ("Block if :a: == 1", 13, "'==' is not an operator"),
    ("Block if :a: ! 1", 13, "did you mean '!='"),
    ("Block if amount > 5", 9, "unknown word 'amount'"),
    ("Block if :a: not :b:", 17, "expected 'in' after 'not'"),
    ("Block if :a: = 1 :b:", 17, "expected 'and', 'or' or the end of the rule"),
    ("Block if 5", 10, "expected an operator or 'in' after the number 5"),
    ("Block if :a: = 1.2.3", 15, "malformed number"),
    ("Block if :a: > 1e5", 15, "malformed number '1e5'; numbers are written in plain digits"),
    ("Block if :a: = 'x\\y'", 17, "unknown escape"),
    ("Block if is_missing :a:", 20, "expected '(' after is_missing"),
    ("Block if :a: in ()", 17, "expected a string, number or boolean"),
    ("Block if :a: in ('x' 'y')", 21, "expected ',' or ')' in the set"),
    ("Block if :a: = 1 # comment", 17, "unexpected character '#'"),
    ("", 0, "empty rule"),
    ("   ", 0, "empty rule"),
]


@pytest.mark.parametrize(("source", "column", "fragment"), ERRORS)
def test_syntax_errors_point_at_the_mistake(source: str, column: int, fragment: str) -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(source)
    error = info.value
    assert fragment in error.message
    assert error.column == column, error.pointer()
    assert error.position == column  # single-line sources
    assert error.line == source
    line, caret = error.pointer().split("\n")
    assert line == source
    assert caret == " " * column + "^ " + error.message
    assert str(error) == f"{error.message} (line 1, column {column + 1})"
    assert isinstance(error, ValueError)


def test_unknown_attribute_is_pointed_at() -> None:
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(
            "Block if :amount_in_usd: > 5 and :amout: > 1",
            known_attributes={"amount_in_usd", "amount"},
        )
    assert info.value.message == "unknown attribute :amout:"
    assert info.value.pointer() == (
        "Block if :amount_in_usd: > 5 and :amout: > 1\n"
        "                                 ^ unknown attribute :amout:"
    )


def test_error_on_a_later_line_reports_that_line() -> None:
    source = "Block if :a: = 1\n\tand :b: = 'x"
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(source)
    error = info.value
    assert error.line_number == 2
    assert error.line == "\tand :b: = 'x"
    assert error.column == 11
    assert error.pointer() == "\tand :b: = 'x\n\t          ^ unterminated string: no closing '"


def test_nesting_limit() -> None:
    depth = MAX_NESTING_DEPTH
    ok = "Block if " + "(" * depth + ":a:" + ")" * depth
    assert parse_rule(ok).expr == Truthy(Attr("a"))
    too_deep = "Block if " + "(" * (depth + 1) + ":a:" + ")" * (depth + 1)
    with pytest.raises(RuleSyntaxError, match="nesting deeper than 32 levels") as info:
        parse_rule(too_deep)
    assert info.value.column == len("Block if ") + depth
    nots = "Block if " + "not " * (depth + 1) + ":a:"
    with pytest.raises(RuleSyntaxError, match="nesting deeper") as info:
        parse_rule(nots)
    assert info.value.column == len("Block if ") + 4 * depth
    assert parse_rule("Block if " + "not " * depth + ":a:")


def test_length_limit() -> None:
    longest = "Block if :a: = '" + "x" * (MAX_RULE_LENGTH - 17) + "'"
    assert len(longest) == MAX_RULE_LENGTH
    assert parse_rule(longest)
    with pytest.raises(RuleSyntaxError, match="the limit is 1000") as info:
        parse_rule(longest + " ")
    assert info.value.position == MAX_RULE_LENGTH
    huge = "Block if :a: = '" + "x" * 1_000_000 + "'"
    with pytest.raises(RuleSyntaxError) as info:
        parse_rule(huge)
    assert len(info.value.pointer()) < 300  # the pointer shows a window, not the megabyte


def test_set_size_limit() -> None:
    values = ", ".join(str(n) for n in range(MAX_SET_SIZE))
    assert parse_rule(f"Block if :n: in ({values})")
    with pytest.raises(RuleSyntaxError, match="more than 100 values") as info:
        parse_rule(f"Block if :n: in ({values}, 100)")
    assert info.value.column == len(f"Block if :n: in ({values}, ")


# -- the Rule value ------------------------------------------------------------------------


def test_rules_are_immutable_and_hashable() -> None:
    rule = parse_rule(EXAMPLES["block"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.action = "allow"  # type: ignore[misc]
    assert rule == parse_rule(EXAMPLES["block"])
    assert len({rule, parse_rule(EXAMPLES["block"])}) == 1
    assert "matcher" not in repr(rule)


def test_rules_pickle_for_worker_processes() -> None:
    rule = parse_rule(EXAMPLES["block"])
    copy = pickle.loads(pickle.dumps(rule))
    assert copy == rule
    assert evaluate(
        copy, attributes={"card_country": "US", "ip_country": "FR", "amount_in_usd": 501}
    )


def test_a_rule_built_from_a_tree_is_compiled() -> None:
    rule = Rule(action="review", source="", expr=IsMissing(Attr("email")))
    assert evaluate(rule, attributes={})
    assert rule.to_source() == "Review if is_missing(:email:)"
    with pytest.raises(ValueError, match="unknown rule action"):
        Rule(action="deny", source="", expr=IsMissing(Attr("email")))  # type: ignore[arg-type]


def test_canonical_printing() -> None:
    rule = parse_rule(
        "block if NOT (:a: = -1.50 OR :b: NOT IN ('x', 'y')) AND :c: = FALSE or not not :d:"
    )
    assert rule.to_source() == (
        "Block if not (:a: = -1.50 or :b: not in ('x', 'y')) and :c: = false or not not :d:"
    )
    true: object = BoolLit(True)
    assert true != NumLit(1)  # kinds are distinct nodes


# -- decide: Radar's order and shadow mode -------------------------------------------------


def test_decide_follows_radar_order() -> None:
    three_ds = parse_rule("Request 3DS if :amount: > 100")
    allow = parse_rule("Allow if :customer: in @vip")
    block = parse_rule("Block if :amount: > 500")
    review = parse_rule("Review if :amount: > 50")
    rules = [(review, False), (block, False), (allow, False), (three_ds, False)]
    vip = {"vip": frozenset({"cus_vip"})}

    # 3-D Secure first; the other groups still apply once it has succeeded.
    verdict = decide(rules, attributes={"amount": 200, "customer": "cus_x"}, lists=vip)
    assert (verdict.action, verdict.rule) == ("request_3ds", three_ds)
    assert verdict.review_after_3ds is review
    verdict = decide(rules, attributes={"amount": 200, "customer": "cus_vip"}, lists=vip)
    assert (verdict.action, verdict.rule, verdict.review_after_3ds) == (
        "request_3ds",
        three_ds,
        None,
    )
    # A block rule blocks at once: no authentication could change what it reads.
    verdict = decide(rules, attributes={"amount": 1000, "customer": "cus_x"}, lists=vip)
    assert (verdict.action, verdict.rule) == ("block", block)
    only_3ds = decide([(three_ds, False)], attributes={"amount": 200})
    assert (only_3ds.action, only_3ds.review_after_3ds) == ("request_3ds", None)

    no_3ds = [pair for pair in rules if pair[0] is not three_ds]
    verdict = decide(no_3ds, attributes={"amount": 1000, "customer": "cus_vip"}, lists=vip)
    assert (verdict.action, verdict.rule) == ("allow", allow)  # an allowed payment is not blocked
    verdict = decide(no_3ds, attributes={"amount": 1000, "customer": "cus_x"}, lists=vip)
    assert (verdict.action, verdict.rule) == ("block", block)
    verdict = decide(no_3ds, attributes={"amount": 60, "customer": "cus_x"}, lists=vip)
    assert (verdict.action, verdict.rule) == ("review", review)
    verdict = decide(no_3ds, attributes={"amount": 10, "customer": "cus_x"}, lists=vip)
    assert verdict.action == "none"
    assert verdict.rule is None
    assert verdict.shadow_hits == ()


def test_decide_picks_the_first_matching_rule_of_a_group_in_input_order() -> None:
    first = parse_rule("Block if :amount: > 10")
    second = parse_rule("Block if :amount: > 5")
    verdict = decide([(second, False), (first, False)], attributes={"amount": 20})
    assert verdict.rule is second


def test_shadow_rules_are_reported_but_change_nothing() -> None:
    shadow_block = parse_rule("Block if :amount: > 5")
    shadow_allow = parse_rule("Allow if :amount: > 5")
    shadow_miss = parse_rule("Block if :amount: > 500")
    review = parse_rule("Review if :amount: > 1")
    rules = [(shadow_block, True), (review, False), (shadow_miss, True), (shadow_allow, True)]
    verdict = decide(rules, attributes={"amount": 10})
    assert (verdict.action, verdict.rule) == ("review", review)
    assert verdict.shadow_hits == (shadow_block, shadow_allow)

    only_shadow = decide([(shadow_block, True)], attributes={"amount": 10})
    assert only_shadow.action == "none"
    assert only_shadow.shadow_hits == (shadow_block,)


def test_shadow_rules_are_evaluated_even_when_an_earlier_group_wins() -> None:
    allow = parse_rule("Allow if :amount: < 100")
    shadow_review = parse_rule("Review if :amount: > 1")
    verdict = decide([(allow, False), (shadow_review, True)], attributes={"amount": 10})
    assert verdict.action == "allow"
    assert verdict.shadow_hits == (shadow_review,)


# -- safety ---------------------------------------------------------------------------------


def test_the_rules_modules_never_evaluate_python() -> None:
    # Inspect the modules' syntax trees (here, in the test) for the forbidden calls and imports.
    package = Path(paywarden.fraud.__file__).parent
    sources = [
        package / f"{name}.py" for name in ("rules", "rules_ast", "rules_eval", "rules_parser")
    ]
    forbidden = {"eval", "exec", "compile", "literal_eval", "__import__", "import_module"}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                regex = isinstance(func, ast.Attribute) and ast.unparse(func.value) == "re"
                assert regex or name not in forbidden, f"{path.name}:{node.lineno} calls {name}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [alias.name for alias in node.names] + [getattr(node, "module", "")]
                assert not {"ast", "builtins", "importlib"} & set(modules), path.name
