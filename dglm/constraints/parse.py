"""The string form of constraints, parsed by a small whitelist grammar (no eval, no exec).

Grammar (whitespace between tokens is ignored)::

    expr   := term (("+" | "-") term)*
    term   := unary (("*" | "/") unary)*
    unary  := ("+" | "-")* atom
    atom   := NUMBER | call | "(" expr ")"
    call   := NAME ("." NAME)? "(" [arg ("," arg)*] ")"
    arg    := [NAME "="] (STRING | ["-"] NUMBER)

Only these calls exist: ``toxicity.low()``, ``toxicity.high()``, ``sentiment.positive()``,
``sentiment.negative()``, ``topic(name)``, ``topic.describe(text, name=, scale=, threshold=)``,
``near(text, scale=, threshold=)``, ``away_from(text, scale=, threshold=)`` and ``target(probe, label)``.
Numbers scale constraints; a constraint times a constraint, or a bare number, is an error. Strings are
single- or double-quoted with backslash escapes. Input longer than ``max_length`` characters or nested
deeper than ``max_depth`` parentheses raises :class:`ConstraintSyntaxError` (never a RecursionError),
and the parser runs in time linear in the input. :func:`check_syntax` checks the grammar alone, without
building the constraint, so that it runs before torch is imported (the command line checks ``--control``
this way before loading anything).

Example:
    >>> parse_constraint("toxicity.low() + 2*topic('sports') - sentiment.negative()")
    toxicity.low() + 2*topic('sports') - sentiment.negative()
    >>> parse_constraint("toxicity.low() +")
    Traceback (most recent call last):
    ...
    dglm.constraints.parse.ConstraintSyntaxError: expected a number, a call such as topic('sports'), or '(' at position 16, found end of input
      toxicity.low() +
                      ^
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dglm.constraints.algebra import Constraint

MAX_LENGTH = 10_000
MAX_DEPTH = 64


class ConstraintSyntaxError(ValueError):
    """A malformed constraint expression. ``position`` is the 0-based character offset of the problem,
    ``expected`` says what would have been accepted there; ``str(error)`` shows the text with a caret.

    Example:
        >>> try:
        ...     parse_constraint("topic('sports'")
        ... except ConstraintSyntaxError as e:
        ...     print(e.position, e.expected)
        14 ',' or ')'
    """

    def __init__(self, message: str, text: str, position: int, expected: str | None = None):
        self.message, self.text, self.position, self.expected = message, text, position, expected
        super().__init__(f"{message}\n{_caret(text, position)}")


def _caret(text: str, position: int, width: int = 60) -> str:
    """The line of ``text`` around ``position`` (at most ``width`` characters each side) and a caret."""
    start = max(0, position - width)
    end = min(len(text), position + width)
    snippet = text[start:end]
    prefix = "..." if start > 0 else ""
    shown = "".join(ch if ch.isprintable() else " " for ch in snippet)
    return f"  {prefix}{shown}{'...' if end < len(text) else ''}\n  {' ' * (len(prefix) + position - start)}^"


@dataclass(frozen=True)
class _Token:
    kind: str  # NAME, NUMBER, STRING, OP, END
    value: str | float
    position: int
    raw: str = ""  # the source text of the token


_DIGITS = "0123456789"
_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPS = set("+-*/().,=")
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t"}


def _tokenize(text: str) -> list[_Token]:
    tokens, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            value = float(match.group())
            if not math.isfinite(value):
                raise ConstraintSyntaxError(f"number {match.group()!r} at position {i} is too large", text, i,
                                            "a finite number")
            tokens.append(_Token("NUMBER", value, i, match.group()))
            i = match.end()
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            match = _NAME.match(text, i)
            tokens.append(_Token("NAME", match.group(), i, match.group()))
            i = match.end()
        elif ch in "'\"":
            start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise ConstraintSyntaxError(f"unterminated string starting at position {start}", text, start,
                                                f"a closing {ch}")
                c = text[i]
                if c == ch:
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n or text[i + 1] not in _ESCAPES:
                        raise ConstraintSyntaxError(f"invalid escape at position {i}", text, i,
                                                    "one of \\\\ \\' \\\" \\n \\t")
                    chars.append(_ESCAPES[text[i + 1]])
                    i += 2
                else:
                    chars.append(c)
                    i += 1
            tokens.append(_Token("STRING", "".join(chars), start, text[start:i]))
        elif ch in _OPS:
            tokens.append(_Token("OP", ch, i, ch))
            i += 1
        else:
            raise ConstraintSyntaxError(f"unexpected character {ch!r} at position {i}", text, i,
                                        "a name, a number, a string or one of + - * / ( ) . , =")
    tokens.append(_Token("END", "", n))
    return tokens


# name -> parameters as (name, type, required); the factory is the object of that dotted name in
# dglm.constraints.builtin (imported when a constraint is built, see _factory).
_STR, _NUM = "string", "number"
_CALLS = {
    "toxicity.low": (),
    "toxicity.high": (),
    "sentiment.positive": (),
    "sentiment.negative": (),
    "topic": (("name", _STR, True),),
    "topic.describe": (("text", _STR, True), ("name", _STR, False), ("scale", _NUM, False), ("threshold", _NUM, False)),
    "near": (("text", _STR, True), ("scale", _NUM, False), ("threshold", _NUM, False)),
    "away_from": (("text", _STR, True), ("scale", _NUM, False), ("threshold", _NUM, False)),
    "target": (("probe", _STR, True), ("label", _STR, True)),
}


def _factory(name: str):
    """The builtin that a call name of the grammar stands for (``"topic.describe"`` -> ``topic.describe``)."""
    from dglm.constraints import builtin

    value = builtin
    for part in name.split("."):
        value = getattr(value, part)
    return value


class _Checked:
    """What a call stands for while only the syntax is checked (:func:`check_syntax`): a constraint whose
    arguments are not bound yet."""


def _is_constraint(value) -> bool:
    return not isinstance(value, (int, float))  # the grammar's values are numbers or constraints


_ATOM = "a number, a call such as topic('sports'), or '('"
_AFTER_ATOM = "'+', '-', '*', '/' or end of input"


class _Parser:
    def __init__(self, text: str, max_depth: int, build: bool = True):
        self.text, self.max_depth, self.build = text, max_depth, build
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    # -- helpers -----------------------------------------------------------------------------------------
    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def error(self, expected: str, token: _Token | None = None) -> ConstraintSyntaxError:
        token = token or self.tok
        raw = token.raw if len(token.raw) <= 40 else token.raw[:37] + "..."
        found = "end of input" if token.kind == "END" else repr(raw)
        return ConstraintSyntaxError(f"expected {expected} at position {token.position}, found {found}",
                                     self.text, token.position, expected)

    def accept(self, op: str) -> _Token | None:
        if self.tok.kind == "OP" and self.tok.value == op:
            token = self.tok
            self.i += 1
            return token
        return None

    def expect(self, op: str, expected: str | None = None) -> _Token:
        token = self.accept(op)
        if token is None:
            raise self.error(expected or repr(op))
        return token

    # -- grammar -----------------------------------------------------------------------------------------
    def parse(self) -> Constraint:
        start = self.tok
        value = self.expr()
        if self.tok.kind != "END":
            raise self.error(_AFTER_ATOM)
        if not _is_constraint(value):
            raise ConstraintSyntaxError(f"expected a constraint at position {start.position}, found a bare "
                                        f"number", self.text, start.position, "a constraint")
        return value

    def expr(self):
        left = self.term()
        while self.tok.kind == "OP" and self.tok.value in "+-":
            op = self.tok
            self.i += 1
            right = self.term()
            if not (_is_constraint(left) and _is_constraint(right)):
                raise ConstraintSyntaxError(f"'{op.value}' at position {op.position} joins constraints, not bare "
                                            f"numbers; scale a constraint with '*'", self.text, op.position,
                                            "constraints on both sides of '+' / '-'")
            if self.build:
                left = left + right if op.value == "+" else left - right
        return left

    def term(self):
        left = self.unary()
        while self.tok.kind == "OP" and self.tok.value in "*/":
            op = self.tok
            self.i += 1
            right = self.unary()
            if op.value == "*":
                if _is_constraint(left) and _is_constraint(right):
                    raise ConstraintSyntaxError(f"cannot multiply two constraints at position {op.position}; "
                                                f"add them or scale one by a number", self.text, op.position,
                                                "a number on one side of '*'")
                if _is_constraint(left):
                    left = self.scaled(left, right, op)
                elif _is_constraint(right):
                    left = self.scaled(right, left, op)
                else:
                    left = self.number(left * right, op)
            else:
                if _is_constraint(right):
                    raise ConstraintSyntaxError(f"cannot divide by a constraint at position {op.position}",
                                                self.text, op.position, "a number after '/'")
                if right == 0:
                    raise ConstraintSyntaxError(f"division by zero at position {op.position}", self.text,
                                                op.position, "a non-zero number after '/'")
                left = self.scaled(left, 1.0 / right, op) if _is_constraint(left) \
                    else self.number(left / right, op)
        return left

    def scaled(self, constraint: Constraint, weight: float, token: _Token) -> Constraint:
        if not self.build:
            return constraint
        from dglm.constraints.algebra import scale

        try:
            return scale(constraint, weight)
        except ValueError:  # the folded weight overflowed
            raise ConstraintSyntaxError(f"the weight overflows at position {token.position}", self.text,
                                        token.position, "a finite weight") from None

    def number(self, value: float, token: _Token) -> float:
        if not math.isfinite(value):
            raise ConstraintSyntaxError(f"the weight overflows at position {token.position}", self.text,
                                        token.position, "a finite weight")
        return value

    def unary(self):
        sign, count = 1.0, 0
        while self.tok.kind == "OP" and self.tok.value in "+-":  # a loop, not recursion
            count += 1
            if count > self.max_depth:  # each sign is a level of nesting, limited like parentheses
                raise ConstraintSyntaxError(f"more than {self.max_depth} signs in a row at position "
                                            f"{self.tok.position}", self.text, self.tok.position,
                                            f"at most {self.max_depth} nested signs")
            if self.tok.value == "-":
                sign = -sign
            self.i += 1
        value = self.atom()
        if sign == 1.0:
            return value
        return -value if not _is_constraint(value) else self.scaled(value, -1.0, self.tokens[self.i - 1])

    def atom(self):
        token = self.tok
        if token.kind == "NUMBER":
            self.i += 1
            return token.value
        if token.kind == "NAME":
            return self.call()
        if self.accept("("):
            self.depth += 1
            if self.depth > self.max_depth:
                raise ConstraintSyntaxError(f"parentheses nested deeper than {self.max_depth} levels at position "
                                            f"{token.position}", self.text, token.position,
                                            f"at most {self.max_depth} nested parentheses")
            value = self.expr()
            self.expect(")", "')' or an operator")
            self.depth -= 1
            return value
        raise self.error(_ATOM)

    def call(self) -> Constraint:
        start = self.tok
        name = start.value
        self.i += 1
        if self.accept("."):
            if self.tok.kind != "NAME":
                raise self.error("a method name")
            name = f"{name}.{self.tok.value}"
            self.i += 1
        if name not in _CALLS:
            raise ConstraintSyntaxError(f"unknown name {name!r} at position {start.position}; expected one of "
                                        f"{', '.join(_CALLS)}", self.text, start.position,
                                        f"one of {', '.join(_CALLS)}")
        params = _CALLS[name]
        self.expect("(", f"'(' after {name}")
        positional, keywords = [], {}
        if not self.accept(")"):
            while True:
                key_token = None
                if self.tok.kind == "NAME" and self.tokens[self.i + 1].kind == "OP" \
                        and self.tokens[self.i + 1].value == "=":
                    key_token = self.tok
                    self.i += 2
                value_token = self.tok
                value = self.argument(first=not positional and not keywords and key_token is None)
                if key_token is not None:
                    if key_token.value in keywords:
                        raise ConstraintSyntaxError(f"argument {key_token.value!r} given twice at position "
                                                    f"{key_token.position}", self.text, key_token.position,
                                                    "each argument at most once")
                    keywords[key_token.value] = (value, key_token)
                elif keywords:
                    raise ConstraintSyntaxError(f"positional argument after a keyword argument at position "
                                                f"{value_token.position}", self.text, value_token.position,
                                                "a keyword argument (name=value)")
                else:
                    positional.append((value, value_token))
                if self.accept(")"):
                    break
                self.expect(",", "',' or ')'")
        return self.bind(name, params, positional, keywords, start)

    def argument(self, first: bool = False):
        negative = self.accept("-") is not None
        token = self.tok
        if token.kind == "NUMBER":
            self.i += 1
            return -token.value if negative else token.value
        if token.kind == "STRING" and not negative:
            self.i += 1
            return token.value
        raise self.error("a number" if negative else "a string, a number or ')'" if first else "a string or a number")

    def bind(self, name, params, positional, keywords, start: _Token) -> Constraint:
        signature = f"{name}({', '.join(p if req else p + '=' for p, _, req in params)})"
        if len(positional) > len(params):
            value, token = positional[len(params)]
            raise ConstraintSyntaxError(f"{name} takes at most {len(params)} argument(s) at position "
                                        f"{token.position}: {signature}", self.text, token.position, "')'")
        kwargs = {param: given for (param, _, _), given in zip(params, positional, strict=False)}
        for key, (value, token) in keywords.items():
            if key not in {p for p, _, _ in params}:
                raise ConstraintSyntaxError(f"{name} has no argument {key!r} at position {token.position}: "
                                            f"{signature}", self.text, token.position, f"one of {signature}")
            if key in kwargs:
                raise ConstraintSyntaxError(f"argument {key!r} given twice at position {token.position}",
                                            self.text, token.position, signature)
            kwargs[key] = (value, token)
        for param, kind, required in params:
            if param not in kwargs:
                if required:
                    raise ConstraintSyntaxError(f"{name} needs argument {param!r} at position {start.position}: "
                                                f"{signature}", self.text, self.tokens[self.i - 1].position,
                                                f"a {kind} for {param!r}")
                continue
            value, token = kwargs[param]
            if (kind == _STR) != isinstance(value, str):
                raise ConstraintSyntaxError(f"argument {param!r} of {name} must be a {kind} at position "
                                            f"{token.position}", self.text, token.position, f"a {kind}")
        if not self.build:
            return _Checked()
        try:
            return _factory(name)(**{k: v for k, (v, _) in kwargs.items()})
        except (ValueError, TypeError) as e:
            raise ConstraintSyntaxError(f"invalid arguments to {name} at position {start.position}: {e}",
                                        self.text, start.position, signature) from None


def parse_constraint(text: str, max_length: int = MAX_LENGTH, max_depth: int = MAX_DEPTH) -> Constraint:
    """Parse the string form of a constraint (see the module docstring for the grammar).

    Example:
        >>> parse_constraint("0.5 * toxicity.low() + topic.describe('competitive sports', name='sports')")
        0.5*toxicity.low() + topic.describe('competitive sports', name='sports')
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) > max_length:
        raise ConstraintSyntaxError(f"the expression is {len(text)} characters long; the limit is {max_length}",
                                    text, max_length, f"at most {max_length} characters")
    return _Parser(text, max_depth).parse()


def check_syntax(text: str, max_length: int = MAX_LENGTH, max_depth: int = MAX_DEPTH) -> None:
    """Check the string form of a constraint against the grammar without building it (nothing beyond the
    standard library is imported): raises the :class:`ConstraintSyntaxError` that :func:`parse_constraint`
    raises for a malformed expression. Argument values (a scale out of range) and weights that overflow
    only once folded together are checked when the constraint is built, and names a checkpoint must know (a topic, a probe) when it is resolved.

    Example:
        >>> check_syntax("toxicity.low() + 2*topic('sports')")
        >>> check_syntax("topic('sports'")
        Traceback (most recent call last):
        ...
        dglm.constraints.parse.ConstraintSyntaxError: expected ',' or ')' at position 14, found end of input
          topic('sports'
                        ^
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if len(text) > max_length:
        raise ConstraintSyntaxError(f"the expression is {len(text)} characters long; the limit is {max_length}",
                                    text, max_length, f"at most {max_length} characters")
    _Parser(text, max_depth, build=False).parse()
