"""Constraints: differentiable losses on sentence embeddings that steer the semantic diffusion.

- :mod:`~dglm.constraints.algebra`: :class:`Constraint` and its algebra (``+``, ``-``, ``*``, ``.weight``).
- :mod:`~dglm.constraints.probes`: :class:`Probe` (linear probes, fit / export / save / load) and
  :class:`ProbeRegistry` (the probes a checkpoint ships).
- :mod:`~dglm.constraints.builtin`: ``toxicity``, ``sentiment``, ``topic``, ``near``, ``away_from``.
- :mod:`~dglm.constraints.parse`: :func:`parse_constraint`, the string form.
- :mod:`~dglm.constraints.guidance`: :class:`ConstraintGuidance`, the denoiser wrapper, and :class:`Control`,
  the per-prefix constraints and strengths of one call that the pipeline lays out into those wrappers.

Example:
    >>> c = parse_constraint("toxicity.low() + 2*topic('sports') - sentiment.negative()")
    >>> c == toxicity.low() + 2 * topic("sports") + sentiment.positive()
    True
"""

from dglm.constraints.algebra import (
    Constraint,
    FunctionConstraint,
    Leaf,
    Scaled,
    Sum,
    UnresolvedConstraintError,
)
from dglm.constraints.builtin import Target, TextTarget, away_from, near, sentiment, target, topic, toxicity
from dglm.constraints.guidance import ConstraintGuidance, Control
from dglm.constraints.parse import ConstraintSyntaxError, parse_constraint
from dglm.constraints.probes import Probe, ProbeTarget
from dglm.constraints.registry import ProbeRegistry

__all__ = [
    "Constraint",
    "ConstraintGuidance",
    "ConstraintSyntaxError",
    "Control",
    "FunctionConstraint",
    "Leaf",
    "Probe",
    "ProbeRegistry",
    "ProbeTarget",
    "Scaled",
    "Sum",
    "Target",
    "TextTarget",
    "UnresolvedConstraintError",
    "away_from",
    "near",
    "parse_constraint",
    "sentiment",
    "target",
    "topic",
    "toxicity",
]
