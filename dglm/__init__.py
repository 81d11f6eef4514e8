"""dglm: Diffusion Guided Language Modeling as a composable controller library.

A frozen sentence encoder embeds the prefix; a diffusion model samples the embedding of a plausible
continuation, steered by differentiable constraints; a prompt generator turns that plan into soft tokens;
a pretrained decoder writes text that follows it.

Example:
    >>> from dglm import DGLM, Controller, toxicity, topic          # doctest: +SKIP
    >>> pipe = DGLM.from_pretrained("mini")                          # doctest: +SKIP
    >>> Controller(toxicity.low() + topic("sports"), pipe).generate(["The match last night"])  # doctest: +SKIP
"""

__version__ = "0.1.0"

# Public names and the module each lives in. They are imported on first use (PEP 562), so that
# ``import dglm`` and ``dglm --help`` stay fast: torch, transformers and sentence-transformers load only
# when a name that needs them is used.
_LAZY = {
    "DecoderConfig": "dglm.config", "DGLMConfig": "dglm.config", "DiffusionConfig": "dglm.config",
    "EncoderConfig": "dglm.config", "PromptConfig": "dglm.config",
    "GenerationConfig": "dglm.config", "Control": "dglm.constraints",
    "Constraint": "dglm.constraints", "ConstraintSyntaxError": "dglm.constraints",
    "FunctionConstraint": "dglm.constraints", "Probe": "dglm.constraints", "ProbeRegistry": "dglm.constraints",
    "away_from": "dglm.constraints", "near": "dglm.constraints", "parse_constraint": "dglm.constraints",
    "sentiment": "dglm.constraints", "topic": "dglm.constraints", "toxicity": "dglm.constraints",
    "Controller": "dglm.controller", "Decoder": "dglm.decoder", "SemanticDiffuser": "dglm.diffusion",
    "SemanticEncoder": "dglm.encoder", "DGLM": "dglm.pipeline", "GenerationOutput": "dglm.outputs",
    "Plan": "dglm.outputs", "PromptGenerator": "dglm.prompt", "CheckpointError": "dglm.io", "OutputError": "dglm.io",
}


def __getattr__(name: str):
    """Import a public name's module on first use (``dglm.DGLM`` imports :mod:`dglm.pipeline`)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dglm' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = sorted(_LAZY)  # the public names: derived from the table above, never a second copy
