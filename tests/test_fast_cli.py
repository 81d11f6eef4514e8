"""Fast feedback from the command line: a malformed request (the control's syntax, an option out of bounds)
is refused before torch is imported, and off a terminal the CLI says what it is doing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import FAST

from dglm.cli import main
from dglm.constraints.parse import ConstraintSyntaxError, check_syntax, parse_constraint

REPO = Path(__file__).resolve().parents[1]

# Expressions the grammar accepts, and ones it refuses, to compare check_syntax with parse_constraint.
GOOD = ["toxicity.low()", "toxicity.low() + 2*topic('sports') - sentiment.negative()", "-(near('a day') / 4)",
        "topic.describe('competitive sports', name='sports', scale=3, threshold=0.1)", "target('style', 'formal')",
        "0.5 * (toxicity.high() + away_from(\"rain\", scale=2))", "--+toxicity.low()"]
BAD = ["", "topic('sports'", "toxicity.low() +", "2", "2 + toxicity.low()", "topic('a') * topic('b')",
       "topic('a') / topic('b')", "topic('a') / 0", "topic()", "topic(1)", "topic('a', 'b')", "topic(name=1)",
       "topic('a', name='b')", "near(scale=2)", "nearr('x')", "toxicity.lowest()", "topic('a'))", "import os",
       "(" * 100 + "topic('a')" + ")" * 100, "topic('unterminated)", "1e999 * topic('a')"]


@pytest.mark.parametrize("text", GOOD)
def test_check_syntax_accepts_what_parse_accepts(text):
    parse_constraint(text)
    check_syntax(text)


@pytest.mark.parametrize("text", BAD)
def test_check_syntax_refuses_what_parse_refuses_with_the_same_error(text):
    with pytest.raises(ConstraintSyntaxError) as parsed:
        parse_constraint(text)
    with pytest.raises(ConstraintSyntaxError) as checked:
        check_syntax(text)
    assert str(checked.value) == str(parsed.value)


@pytest.mark.parametrize(("argv", "message"), [
    (["--control", "topic('sports'"], "dglm: error: --control: expected ',' or ')' at position 14"),
    (["--control", "toxicity.low() + nonsense()"], "unknown name 'nonsense'"),
    (["--sigma2", "-3"], "dglm: error: --sigma2=-3.0: Input should be greater than or equal to 0"),
    (["--top-p", "2"], "dglm: error: --top-p=2.0:"),
    (["--steps", "0"], "dglm: error: --steps=0:"),
    (["--strength", "3"], "guidance strength needs a --control"),
])
def test_a_bad_request_fails_before_torch_is_imported(argv, message):
    """The CLI in a fresh interpreter: the error comes back, and torch was never imported for it (the
    checkpoint named does not even exist: the request is refused first)."""
    code = ("import sys, time\nfrom dglm.cli import main\nstart = time.perf_counter()\n"
            f"status = main(['generate', 'Hi', '--checkpoint', 'no/such/checkpoint', *{argv!r}])\n"
            "print(status, 'torch' in sys.modules, time.perf_counter() - start)")
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    wall = time.perf_counter() - start
    status, torch_imported, seconds = result.stdout.split()
    assert (status, torch_imported) == ("2", "False"), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert float(seconds) < 2.0 and wall < 30  # loosely: the machine may be busy; torch alone takes seconds


def test_off_a_terminal_the_cli_says_what_it_is_doing(checkpoint, capsys):  # noqa: F811
    assert main(["generate", "the game", "a river", "-n", "2", "--checkpoint", checkpoint, *FAST]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == f"dglm: loading the checkpoint {checkpoint!r}"
    assert lines[1] == "dglm: generating: 2 prefixes x 2 samples"
    assert lines[2].startswith("dglm: prefixes 1-2 of 2 written (encode ")
    assert captured.out.count("--- prefix") == 4
