"""The benchmark behind ``dglm bench``: DGLM against plain decoding and the methods users would pick instead.

- :mod:`~dglm.bench.config`: :class:`BenchConfig` and the CLI options generated from its fields.
- :mod:`~dglm.bench.prompts`: the neutral openers and the topical prefixes (corpus test split).
- :mod:`~dglm.bench.setup`: the pipeline, prompt sets, evaluators and the peers' supervision.
- :mod:`~dglm.bench.metrics`: Dist-3, Div, perplexity, plan fidelity, MAUVE; the control-evaluator interface.
- :mod:`~dglm.bench.evaluators`: the evaluator LM (Gemma-3-270M) and the independent control classifiers.
- :mod:`~dglm.bench.baselines`, :mod:`~dglm.bench.fudge`: the peers (best-of-N, FUDGE, activation steering,
  prompting).
- :mod:`~dglm.bench.systems`, :mod:`~dglm.bench.scoring`, :mod:`~dglm.bench.report`, :mod:`~dglm.bench.plots`:
  running, scoring, reporting.
- :mod:`~dglm.bench.tasks`: the six tasks (neutral, continuation, avoidance, style, graded, composition);
  :mod:`~dglm.bench.style`: the style task's data and its proxy evaluator.
- :mod:`~dglm.bench.output`: the output folder, checked before any work.
- :mod:`~dglm.bench.run`: :func:`run_benchmark` and ``main``.

Example:
    >>> from dglm.bench import BenchConfig, run_benchmark
    >>> result = run_benchmark(BenchConfig.for_quick())   # doctest: +SKIP
"""

from dglm.bench.config import BenchConfig, add_arguments
from dglm.bench.run import main, run_benchmark

__all__ = ["BenchConfig", "add_arguments", "main", "run_benchmark"]
