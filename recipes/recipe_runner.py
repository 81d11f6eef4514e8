"""What every measurement recipe here shares: its options (:func:`recipe_parser`) and one run that records the
command, writes the JSON result and its Markdown report, and prints the report (:func:`run_recipe`).

The recipes import it as a sibling module (they run as ``PYTHONPATH=. python recipes/<name>.py``).
"""

from __future__ import annotations

import argparse
import sys

from dglm.bench.report import write_report


def recipe_parser(doc: str, out: str, samples: int, seed: int = 0) -> argparse.ArgumentParser:
    """The options every measurement recipe of recipes/ shares (checkpoint, corpus, samples per prompt, new
    tokens, seed, torch threads, output path), for a recipe whose module docstring is ``doc``.

    Example:
        >>> args = recipe_parser("Measure a thing.", "out/thing.json", samples=2).parse_args([])
        >>> args.checkpoint, args.samples, args.out
        ('mini', 2, 'out/thing.json')
    """
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--checkpoint", default="mini")
    p.add_argument("--corpus", default="cache/corpus")
    p.add_argument("--samples", type=int, default=samples, help="samples per prompt")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--seed", type=int, default=seed)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=out, help="JSON path; the Markdown report goes beside it (.md)")
    return p


def run_recipe(parser: argparse.ArgumentParser, script: str, run, markdown, argv=None) -> dict:
    """Parse ``argv``, record the command that reproduces the run, ``run(args) -> result``, write the JSON and
    its Markdown (``markdown(result)``) at ``--out`` and print the Markdown.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     r = run_recipe(recipe_parser("Doc.", d + "/r.json", 1), "recipes/r.py", lambda a: {"n": a.samples},
        ...                    lambda r: f"n = {r['n']}", ["--samples", "3"])
        n = 3
        >>> r["command"]
        'PYTHONPATH=. python recipes/r.py --samples 3'
    """
    args = parser.parse_args(argv)
    args.command = f"PYTHONPATH=. python {script} " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"command": args.command, **run(args)}
    write_report(result, markdown(result), args.out)
    print(markdown(result))
    return result
