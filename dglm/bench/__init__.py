"""The benchmark behind ``dglm bench``: DGLM against plain decoding, best-of-N and a FUDGE-style baseline.

- :mod:`~dglm.bench.metrics`: Dist-3, Div, perplexity, plan fidelity, MAUVE; the control-evaluator interface.
- :mod:`~dglm.bench.evaluators`: the evaluator LM (Gemma-3-270M) and the independent control classifiers.
- :mod:`~dglm.bench.baselines`: best-of-N reranking and FUDGE-style token-level control with the same probe.
- :mod:`~dglm.bench.run`: :class:`BenchConfig`, :func:`run_benchmark` and the CLI (``add_arguments``, ``main``).

Example:
    >>> from dglm.bench import BenchConfig, run_benchmark
    >>> result = run_benchmark(BenchConfig.for_quick(out="/tmp/dglm-bench"))   # doctest: +SKIP
"""

from dglm.bench.run import BenchConfig, add_arguments, main, run_benchmark

__all__ = ["BenchConfig", "add_arguments", "main", "run_benchmark"]
