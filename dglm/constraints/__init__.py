"""Constraints: differentiable losses on sentence embeddings that steer the semantic diffusion.

- :mod:`~dglm.constraints.algebra`: :class:`Constraint` and its algebra (``+``, ``-``, ``*``, ``.weight``).
- :mod:`~dglm.constraints.probes`: :class:`Probe` (linear probes, fit / export / save / load) and
  :class:`ProbeRegistry` (the probes a checkpoint ships).
- :mod:`~dglm.constraints.builtin`: ``toxicity``, ``sentiment``, ``topic``, ``near``, ``away_from``.
- :mod:`~dglm.constraints.parse`: :func:`parse_constraint`, the string form.
- :mod:`~dglm.constraints.guidance`: :class:`ConstraintGuidance`, the denoiser wrapper, and :class:`Control`,
  the per-prefix constraints and strengths of one call that the pipeline lays out into those wrappers.

Example:
    >>> from dglm.constraints import parse_constraint, sentiment, topic, toxicity
    >>> c = parse_constraint("toxicity.low() + 2*topic('sports') - sentiment.negative()")
    >>> c == toxicity.low() + 2 * topic("sports") + sentiment.positive()
    True
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and docs tools; at run time each name is imported on first use
    from dglm.constraints.algebra import (
        Constraint,
        FunctionConstraint,
        Leaf,
        Scaled,
        Sum,
        UnresolvedConstraintError,
    )
    from dglm.constraints.builtin import (
        Target,
        TextTarget,
        away_from,
        near,
        sentiment,
        target,
        topic,
        toxicity,
    )
    from dglm.constraints.guidance import ConstraintGuidance, Control
    from dglm.constraints.parse import ConstraintSyntaxError, parse_constraint
    from dglm.constraints.probes import Probe, ProbeTarget
    from dglm.constraints.registry import ProbeRegistry

# Public names and the module each lives in, imported on first use (PEP 562, as the top-level ``dglm``): the
# string form's syntax (:func:`~dglm.constraints.parse.check_syntax`) is checked without importing torch.
_LAZY = {
    **dict.fromkeys(("Constraint", "FunctionConstraint", "Leaf", "Scaled", "Sum", "UnresolvedConstraintError"),
                    "algebra"),
    **dict.fromkeys(("Target", "TextTarget", "away_from", "near", "sentiment", "target", "topic", "toxicity"),
                    "builtin"),
    "ConstraintGuidance": "guidance", "Control": "guidance", "ConstraintSyntaxError": "parse",
    "parse_constraint": "parse", "ProbeTarget": "probes", "Probe": "probes", "ProbeRegistry": "registry",
}


def __getattr__(name: str):
    """Import a public name's module on first use (``dglm.constraints.Probe`` imports its module)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dglm.constraints' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"dglm.constraints.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


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
