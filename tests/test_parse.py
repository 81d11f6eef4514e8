"""The string form of constraints: whitelist grammar, positioned errors, limits, fuzzing."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dglm.constraints import (
    Constraint,
    ConstraintSyntaxError,
    away_from,
    near,
    parse_constraint,
    sentiment,
    target,
    topic,
    toxicity,
)


@pytest.mark.parametrize("text, expected", [
    ("toxicity.low() + 2*topic('sports') - sentiment.negative()",
     toxicity.low() + 2 * topic("sports") + sentiment.positive()),
    ("  -toxicity.high()", toxicity.low()),
    ("0.5 * (toxicity.low() + sentiment.positive()) / 2", 0.25 * toxicity.low() + 0.25 * sentiment.positive()),
    ("topic(\"sci/tech\") * 3e-1", 0.3 * topic("sci/tech")),
    ("near('I\\'m \"happy\"') - away_from('x', scale=5, threshold=-0.1)",
     near("I'm \"happy\"") - away_from("x", scale=5, threshold=-0.1)),
    ("topic.describe('competitive sports and athletes', name='sports')",
     topic.describe("competitive sports and athletes", name="sports")),
    ("target('formality', 'formal') - - - target('formality', 'formal')", target("formality", "formal") * 0),
    ("((sentiment.positive()))", sentiment.positive()),
])
def test_parses_to_the_same_constraint_as_python(text, expected):
    parsed = parse_constraint(text)
    assert isinstance(parsed, Constraint) and parsed == expected


@pytest.mark.parametrize("text, position, expected", [
    ("toxicity.low() +", 16, "a number, a call such as topic('sports'), or '('"),
    ("topic('sports'", 14, "',' or ')'"),
    ("toxicity.low() topic('x')", 15, "'+', '-', '*', '/' or end of input"),
    ("toxicty.low()", 0, "one of toxicity.low"),
    ("topic(1)", 6, "a string"),
    ("topic()", 6, "a string for 'name'"),
    ("topic('a') * topic('b')", 11, "a number on one side of '*'"),
    ("2 + topic('a')", 2, "constraints on both sides of '+' / '-'"),
    ("2", 0, "a constraint"),
    ("", 0, "a number, a call such as topic('sports'), or '('"),
    ("near('unterminated", 5, "a closing '"),
    ("topic('a') / 0", 11, "a non-zero number after '/'"),
    ("topic('a') @ 2", 11, "a name, a number, a string or one of + - * / ( ) . , ="),
    ("topic(name='a', name='b')", 16, "each argument at most once"),
    ("near('x', color=2)", 10, "one of near(text, scale=, threshold=)"),
    ("near('x', scale=-1)", 0, "near(text, scale=, threshold=)"),
    ("__import__('os').system('true')", 0, "one of toxicity.low"),
    ("1e999 * topic('a')", 0, "a finite number"),
])
def test_errors_show_the_position_and_what_was_expected(text, position, expected):
    with pytest.raises(ConstraintSyntaxError) as info:
        parse_constraint(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.position == position and error.expected.startswith(expected)
    lines = str(error).splitlines()
    assert lines[-1].index("^") - 2 == position  # the caret sits under the offending character


def test_round_trips_through_repr():
    c = (0.5 * toxicity.low() - 2 * (topic("sports") + near("a 'quoted' text")) + away_from("x")
         - topic.describe("food", name="cooking", scale=10, threshold=0.2) / 3)
    assert parse_constraint(repr(c)) == c and repr(parse_constraint(repr(c))) == repr(c)


def _fast(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_deep_nesting_and_huge_input_raise_the_parsers_error_fast():
    for text in ("(" * 1000 + "topic('a')" + ")" * 1000, "-" * 1000 + "topic('a')", "-(" * 1000 + "topic('a')"):
        with pytest.raises(ConstraintSyntaxError, match="nested deeper|signs in a row"):
            parse_constraint(text)
    huge = "toxicity.low() + " * (2**20 // 17) + "toxicity.low()"
    assert len(huge) > 2**20 - 20
    assert _fast(lambda: pytest.raises(ConstraintSyntaxError, parse_constraint, huge)) < 0.5
    with pytest.raises(ConstraintSyntaxError, match="characters long; the limit is 10000"):
        parse_constraint("x" * 2**20)
    # just under the limits: a long flat sum and 60 levels of parentheses parse quickly
    long_sum = " + ".join(["topic('a')"] * 700)
    assert len(long_sum) < 10_000 and _fast(lambda: parse_constraint(long_sum)) < 1.0
    assert parse_constraint("(" * 60 + "topic('a')" + ")" * 60) == topic("a")


_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True,
                     database=None)
_PIECES = ["toxicity", "sentiment", "topic", ".low", ".high", ".positive", ".negative", ".describe", "near",
           "away_from", "target", "(", ")", "'sports'", '"x"', "'", '"', "\\", ",", "=", "name", "scale",
           "+", "-", "*", "/", "2", "0", "1e308", ".5", " ", "()", "\x00", "é"]


@_SETTINGS
@given(st.text(max_size=60))
def test_random_text_only_ever_raises_syntax_errors(text):
    try:
        parse_constraint(text)
    except ConstraintSyntaxError as e:
        assert 0 <= e.position <= len(text)


@_SETTINGS
@given(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join))
def test_grammar_like_text_only_ever_raises_syntax_errors(text):
    try:
        result = parse_constraint(text)
    except ConstraintSyntaxError as e:
        assert 0 <= e.position <= len(text)
    else:
        assert isinstance(result, Constraint)
        assert parse_constraint(repr(result)) == result


_leaf = st.sampled_from([toxicity.low(), toxicity.high(), sentiment.positive(), sentiment.negative(),
                         topic("sports"), topic("sci/tech"), near("it's fine"), away_from('say "no"'),
                         topic.describe("food and cooking", name="food")])
_weight = st.sampled_from([0.0, 0.5, -1.0, 2.0, 3.25, -0.125, 1e-3])
_expr = st.recursive(_leaf, lambda sub: st.one_of(st.tuples(sub, sub).map(lambda ab: ab[0] + ab[1]),
                                                  st.tuples(sub, sub).map(lambda ab: ab[0] - ab[1]),
                                                  st.tuples(_weight, sub).map(lambda ws: ws[0] * ws[1]),
                                                  sub.map(lambda c: -c)), max_leaves=8)


@_SETTINGS
@given(_expr)
def test_every_expression_round_trips_through_its_string_form(c):
    parsed = parse_constraint(repr(c))
    assert parsed == c and repr(parsed) == repr(c)
