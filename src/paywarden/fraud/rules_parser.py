"""Tokenizer and recursive-descent parser for the rules language.

The grammar is documented in :mod:`paywarden.fraud.rules`. Nothing here ever
evaluates Python (no ``eval``, ``exec``, ``compile`` or ``ast``): source text
becomes tokens, tokens become the frozen nodes of
:mod:`paywarden.fraud.rules_ast`.

Every mistake raises one error type, :class:`RuleSyntaxError`, carrying the
offending position so that ``pointer()`` can draw a caret under it. Hostile
input is bounded before any work is done: the source length, the nesting depth
(parentheses and ``not``) and the size of literal sets all have limits, so the
parser's recursion and memory stay small whatever it is fed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from paywarden.fraud.rules_ast import (
    COMPARE_OPS,
    ORDERING_OPS,
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
    lit_kind,
)

MAX_RULE_LENGTH: Final = 1_000
MAX_NESTING_DEPTH: Final = 32
MAX_SET_SIZE: Final = 100
MAX_NAME_LENGTH: Final = 64

_DIGITS = frozenset("0123456789")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_WORD_CHAR = re.compile(r"[A-Za-z0-9_]")
_DIGITS_THEN_WORD = re.compile(r"[0-9]+[A-Za-z_][A-Za-z0-9_]*")

_ACTIONS: Final[dict[str, Action]] = {
    "allow": "allow",
    "block": "block",
    "review": "review",
    "request": "request_3ds",
}
KEYWORDS: Final = frozenset(
    {"allow", "block", "review", "request", "3ds", "if", "and", "or", "not", "in"}
    | {"true", "false", "is_missing"}
)

# Attribute types a caller may declare, mapped to the language's three kinds.
_TYPE_KINDS: Final[dict[type, str]] = {
    str: "string",
    int: "number",
    Decimal: "number",
    float: "number",
    bool: "boolean",
}

TokenKind: TypeAlias = Literal[
    "word", "attr", "list", "string", "number", "op", "(", ")", ",", "eof"
]


class RuleSyntaxError(ValueError):
    """A rule that does not parse, or refers to something unknown.

    ``position`` is the 0-based offset into the whole source; ``line`` is the
    source line holding it and ``column`` the 0-based offset within that line.
    ``pointer()`` renders the line with a caret under the mistake.
    """

    def __init__(self, message: str, *, source: str, position: int) -> None:
        position = max(0, min(position, len(source)))
        start = source.rfind("\n", 0, position) + 1
        end = source.find("\n", position)
        self.message = message
        self.source = source
        self.position = position
        self.line = source[start : len(source) if end == -1 else end]
        self.line_number = source.count("\n", 0, position) + 1
        self.column = position - start
        super().__init__(f"{message} (line {self.line_number}, column {self.column + 1})")

    def pointer(self) -> str:
        """The offending line and, under it, a caret at the mistake and the message."""
        # Show at most a window around the caret, so a huge line stays readable.
        first = max(0, self.column - 80)
        shown = self.line[first : self.column + 40]
        prefix = "..." if first else ""
        suffix = "..." if len(self.line) > self.column + 40 else ""
        # Copy tabs so the caret lines up under tab-indented text.
        before = prefix + self.line[first : self.column]
        pad = "".join("\t" if ch == "\t" else " " for ch in before)
        return f"{prefix}{shown}{suffix}\n{pad}^ {self.message}"


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str  # the raw source text of the token
    value: str | int | Decimal | None  # lower-cased word, name, string value or number
    start: int
    end: int


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens, ending with an ``eof`` token."""
    tokens: list[Token] = []
    pos = 0
    length = len(source)

    def fail(message: str, at: int) -> RuleSyntaxError:
        return RuleSyntaxError(message, source=source, position=at)

    while pos < length:
        char = source[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "(),":
            tokens.append(Token(char, char, None, pos, pos + 1))  # type: ignore[arg-type]
            pos += 1
        elif char in ":@":
            what = "an attribute" if char == ":" else "a list"
            match = _NAME.match(source, pos + 1)
            if match is None:
                raise fail(f"expected {what} name after '{char}' (letters, digits, '_')", pos + 1)
            name = match.group()
            if len(name) > MAX_NAME_LENGTH:
                raise fail(f"name longer than {MAX_NAME_LENGTH} characters", pos + 1)
            end = match.end()
            if char == ":":
                if source[end : end + 1] != ":":
                    raise fail("expected ':' to close the attribute", end)
                end += 1
            tokens.append(Token("attr" if char == ":" else "list", source[pos:end], name, pos, end))
            pos = end
        elif char == "'":
            pos = _string(source, pos, tokens)
        elif char == '"':
            raise fail("strings are written in single quotes", pos)
        elif char in "=!<>":
            two = source[pos : pos + 2]
            if two == "==":
                raise fail("'==' is not an operator; use '=' to compare", pos)
            op = two if two in COMPARE_OPS else char
            if op not in COMPARE_OPS:
                raise fail("unexpected '!'; did you mean '!='?", pos)
            tokens.append(Token("op", op, op, pos, pos + len(op)))
            pos += len(op)
        elif char in _DIGITS and (word := _DIGITS_THEN_WORD.match(source, pos)):
            # `3DS` (as in `Request 3DS`) is a word, not a number followed by a word.
            text = word.group()
            tokens.append(Token("word", text, text.lower(), pos, word.end()))
            pos = word.end()
        elif char == "-" or char in _DIGITS:
            pos = _number(source, pos, tokens)
        elif _NAME.match(char):
            word = _NAME.match(source, pos)
            assert word is not None
            text = word.group()
            tokens.append(Token("word", text, text.lower(), pos, word.end()))
            pos = word.end()
        else:
            raise fail(f"unexpected character {char!r}", pos)
    tokens.append(Token("eof", "", None, length, length))
    return tokens


def _string(source: str, start: int, tokens: list[Token]) -> int:
    chars: list[str] = []
    pos = start + 1
    while pos < len(source):
        char = source[pos]
        if char == "'":
            tokens.append(Token("string", source[start : pos + 1], "".join(chars), start, pos + 1))
            return pos + 1
        if char == "\\":
            escaped = source[pos + 1 : pos + 2]
            if escaped not in ("'", "\\"):
                raise RuleSyntaxError(
                    "unknown escape; inside a string only \\' and \\\\ are allowed",
                    source=source,
                    position=pos,
                )
            chars.append(escaped)
            pos += 2
            continue
        chars.append(char)
        pos += 1
    raise RuleSyntaxError("unterminated string: no closing '", source=source, position=start)


def _number(source: str, start: int, tokens: list[Token]) -> int:
    match = _NUMBER.match(source, start)
    if match is None:
        raise RuleSyntaxError("unexpected '-': expected a number", source=source, position=start)
    end = match.end()
    following = source[end : end + 1]
    if following == "." or _WORD_CHAR.match(following):
        raise RuleSyntaxError("malformed number", source=source, position=start)
    text = match.group()
    value: int | Decimal = Decimal(text) if "." in text else int(text)
    tokens.append(Token("number", text, value, start, end))
    return end


def _describe(token: Token) -> str:
    if token.kind == "eof":
        return "the end of the rule"
    if token.kind == "string":
        return "a string"
    if token.kind == "number":
        return f"the number {token.text[:20]}"
    text = token.text if len(token.text) <= 30 else token.text[:27] + "..."
    return f"'{text}'"


def parse_source(
    source: str,
    *,
    known_attributes: Collection[str] | None = None,
    attribute_types: Mapping[str, type] | None = None,
    known_lists: Collection[str] | None = None,
) -> tuple[Action, Expr]:
    """Parse a whole rule into its action and condition; see :func:`rules.parse_rule`."""
    if attribute_types is not None:
        for name, declared in attribute_types.items():
            if declared not in _TYPE_KINDS:
                # A programming error in the caller, not a mistake in the rule.
                raise TypeError(
                    f"attribute_types[{name!r}] must be str, int, Decimal, float or bool"
                )
    if len(source) > MAX_RULE_LENGTH:
        raise RuleSyntaxError(
            f"rule is {len(source)} characters long; the limit is {MAX_RULE_LENGTH}",
            source=source,
            position=MAX_RULE_LENGTH,
        )
    parser = _Parser(
        source,
        tokenize(source),
        known_attributes=None if known_attributes is None else frozenset(known_attributes),
        attribute_types=dict(attribute_types or {}),
        known_lists=None if known_lists is None else frozenset(known_lists),
    )
    return parser.parse_rule()


class _Parser:
    def __init__(
        self,
        source: str,
        tokens: list[Token],
        *,
        known_attributes: frozenset[str] | None,
        attribute_types: dict[str, type],
        known_lists: frozenset[str] | None,
    ) -> None:
        self.source = source
        self.tokens = tokens
        self.index = 0
        self.depth = 0
        self.known_attributes = known_attributes
        self.attribute_types = attribute_types
        self.known_lists = known_lists

    # -- helpers ---------------------------------------------------------------

    def error(self, message: str, position: int) -> RuleSyntaxError:
        return RuleSyntaxError(message, source=self.source, position=position)

    def peek(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    @staticmethod
    def is_word(token: Token, word: str) -> bool:
        return token.kind == "word" and token.value == word

    def expect(self, kind: TokenKind, what: str) -> Token:
        token = self.peek()
        if token.kind != kind:
            raise self.error(f"expected {what}, found {_describe(token)}", token.start)
        return self.advance()

    def enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING_DEPTH:
            raise self.error(f"nesting deeper than {MAX_NESTING_DEPTH} levels", token.start)

    def kind_of(self, operand: Operand) -> str | None:
        if isinstance(operand, Attr):
            declared = self.attribute_types.get(operand.name)
            return None if declared is None else _TYPE_KINDS[declared]
        return lit_kind(operand)

    def attr(self, token: Token) -> Attr:
        assert isinstance(token.value, str)
        if self.known_attributes is not None and token.value not in self.known_attributes:
            raise self.error(f"unknown attribute {token.text}", token.start)
        return Attr(token.value)

    # -- grammar ---------------------------------------------------------------

    def parse_rule(self) -> tuple[Action, Expr]:
        token = self.advance()
        if token.kind == "eof":
            raise self.error("empty rule; expected Allow, Block, Review or Request 3DS", 0)
        action = _ACTIONS.get(token.value) if token.kind == "word" else None  # type: ignore[arg-type]
        if action is None:
            raise self.error(
                f"unknown action {_describe(token)}; expected Allow, Block, Review or Request 3DS",
                token.start,
            )
        if action == "request_3ds":
            if not self.is_word(self.peek(), "3ds"):
                raise self.error("expected '3DS' after 'Request'", self.peek().start)
            self.advance()
        if not self.is_word(self.peek(), "if"):
            raise self.error(
                f"expected 'if' after the action, found {_describe(self.peek())}", self.peek().start
            )
        self.advance()
        expr = self.parse_or()
        token = self.peek()
        if token.kind == ")":
            raise self.error("unbalanced ')': no '(' to close", token.start)
        if token.kind != "eof":
            raise self.error(
                f"unexpected {_describe(token)}; expected 'and', 'or' or the end of the rule",
                token.start,
            )
        return action, expr

    def parse_or(self) -> Expr:
        operands = [self.parse_and()]
        while self.is_word(self.peek(), "or"):
            self.advance()
            self.check_not_dangling("or")
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and(self) -> Expr:
        operands = [self.parse_not()]
        while self.is_word(self.peek(), "and"):
            self.advance()
            self.check_not_dangling("and")
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def check_not_dangling(self, keyword: str) -> None:
        token = self.peek()
        if token.kind in ("eof", ")") or self.is_word(token, "and") or self.is_word(token, "or"):
            raise self.error(
                f"expected a condition after '{keyword}', found {_describe(token)}", token.start
            )

    def parse_not(self) -> Expr:
        token = self.peek()
        if not self.is_word(token, "not"):
            return self.parse_primary()
        self.advance()
        self.enter(token)
        operand = self.parse_not()
        self.depth -= 1
        return Not(operand)

    def parse_primary(self) -> Expr:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            self.enter(token)
            expr = self.parse_or()
            self.depth -= 1
            closing = self.peek()
            if closing.kind != ")":
                raise self.error(
                    f"expected ')' to close the '(' at column {self._column(token.start)}, "
                    f"found {_describe(closing)}",
                    closing.start,
                )
            self.advance()
            return expr
        if self.is_word(token, "is_missing"):
            self.advance()
            self.expect("(", "'(' after is_missing")
            attr = self.attr(self.expect("attr", "an attribute like :email:"))
            self.expect(")", "')' to close is_missing(")
            return IsMissing(attr)
        return self.parse_condition()

    def parse_condition(self) -> Expr:
        left_token = self.peek()
        left = self.parse_operand("a condition")
        token = self.peek()
        if token.kind == "op":
            self.advance()
            op: CompareOp = token.value  # type: ignore[assignment]
            right_token = self.peek()
            right = self.parse_operand(f"a value after '{op}'")
            self.check_compare(left, left_token, op, right, right_token)
            return Compare(left, op, right)
        if self.is_word(token, "in"):
            self.advance()
            return self.parse_membership(left, left_token, negated=False)
        if self.is_word(token, "not"):
            self.advance()
            if not self.is_word(self.peek(), "in"):
                raise self.error(
                    f"expected 'in' after 'not', found {_describe(self.peek())}", self.peek().start
                )
            self.advance()
            return self.parse_membership(left, left_token, negated=True)
        if isinstance(left, Attr):
            kind = self.kind_of(left)
            if kind not in (None, "boolean"):
                raise self.error(
                    f"{left_token.text} is a {kind}; compare it with an operator "
                    "(only boolean attributes stand alone)",
                    token.start,
                )
            return Truthy(left)
        raise self.error(
            f"expected an operator or 'in' after {_describe(left_token)}, found {_describe(token)}",
            token.start,
        )

    def parse_operand(self, what: str) -> Operand:
        token = self.peek()
        if token.kind == "attr":
            self.advance()
            return self.attr(token)
        if token.kind in ("string", "number") or (
            token.kind == "word" and token.value in ("true", "false")
        ):
            return self.parse_literal(what)
        if token.kind == "word" and token.text[:1].isdigit():
            raise self.error(
                f"malformed number {_describe(token)}; numbers are written in plain digits "
                "with an optional decimal point, like 100000 or 99.5",
                token.start,
            )
        if token.kind == "word" and token.value not in KEYWORDS:
            raise self.error(
                f"unknown word {_describe(token)}; attributes are written between colons, "
                f"like :{token.text[:30]}:",
                token.start,
            )
        raise self.error(f"expected {what}, found {_describe(token)}", token.start)

    def parse_literal(self, what: str) -> Lit:
        token = self.advance()
        if token.kind == "string":
            assert isinstance(token.value, str)
            return StrLit(token.value)
        if token.kind == "number":
            assert isinstance(token.value, int | Decimal)
            return NumLit(token.value)
        if token.kind == "word" and token.value in ("true", "false"):
            return BoolLit(token.value == "true")
        raise self.error(f"expected {what}, found {_describe(token)}", token.start)

    def parse_membership(self, left: Operand, left_token: Token, *, negated: bool) -> Expr:
        token = self.peek()
        left_kind = self.kind_of(left)
        if token.kind == "list":
            self.advance()
            assert isinstance(token.value, str)
            if self.known_lists is not None and token.value not in self.known_lists:
                raise self.error(f"unknown list {token.text}", token.start)
            if left_kind not in (None, "string"):
                raise self.error(
                    f"lists hold strings, but {_operand_text(left_token)} is a {left_kind}",
                    left_token.start,
                )
            return InList(left, token.value, negated)
        if token.kind != "(":
            raise self.error(
                f"expected @list_name or '(' after 'in', found {_describe(token)}", token.start
            )
        self.advance()
        values: list[Lit] = []
        set_kind = left_kind
        while True:
            value_token = self.peek()
            if len(values) == MAX_SET_SIZE:
                raise self.error(f"more than {MAX_SET_SIZE} values in the set", value_token.start)
            value = self.parse_literal("a string, number or boolean")
            kind = lit_kind(value)
            if set_kind is not None and kind != set_kind:
                raise self.error(
                    f"expected a {set_kind} here: a set holds one kind of value"
                    + (" matching its attribute" if left_kind else ""),
                    value_token.start,
                )
            set_kind = kind
            values.append(value)
            if self.peek().kind != ",":
                break
            self.advance()
        closing = self.peek()
        if closing.kind != ")":
            raise self.error(
                f"expected ',' or ')' in the set, found {_describe(closing)}", closing.start
            )
        self.advance()
        return InSet(left, tuple(values), negated)

    def check_compare(
        self, left: Operand, left_token: Token, op: str, right: Operand, right_token: Token
    ) -> None:
        left_kind, right_kind = self.kind_of(left), self.kind_of(right)
        if op in ORDERING_OPS:
            for kind, token in ((left_kind, left_token), (right_kind, right_token)):
                if kind not in (None, "number"):
                    raise self.error(
                        f"'{op}' compares numbers, but {_operand_text(token)} is a {kind}",
                        token.start,
                    )
        if left_kind is not None and right_kind is not None and left_kind != right_kind:
            raise self.error(
                f"cannot compare {_operand_text(left_token)} (a {left_kind}) "
                f"with {_operand_text(right_token)} (a {right_kind})",
                right_token.start,
            )

    def _column(self, position: int) -> int:
        return position - (self.source.rfind("\n", 0, position) + 1) + 1


def _operand_text(token: Token) -> str:
    return token.text if len(token.text) <= 30 else token.text[:27] + "..."
