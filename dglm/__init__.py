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

from dglm.config import (  # noqa: E402
    DecoderConfig,
    DGLMConfig,
    DiffusionConfig,
    EncoderConfig,
    PromptConfig,
    SamplingConfig,
)
from dglm.constraints import (  # noqa: E402
    Constraint,
    ConstraintSyntaxError,
    FunctionConstraint,
    Probe,
    ProbeRegistry,
    away_from,
    near,
    parse_constraint,
    sentiment,
    topic,
    toxicity,
)
from dglm.controller import Controller  # noqa: E402
from dglm.decoder import Decoder  # noqa: E402
from dglm.diffusion import SemanticDiffuser  # noqa: E402
from dglm.encoder import SemanticEncoder  # noqa: E402
from dglm.pipeline import DGLM, GenerationOutput, Plan  # noqa: E402
from dglm.prompt import PromptGenerator  # noqa: E402

__all__ = ["DGLM", "Constraint", "ConstraintSyntaxError", "Controller", "DGLMConfig", "Decoder", "DecoderConfig",
           "DiffusionConfig", "EncoderConfig", "FunctionConstraint", "GenerationOutput", "Plan", "Probe",
           "ProbeRegistry", "PromptConfig", "PromptGenerator", "SamplingConfig", "SemanticDiffuser", "SemanticEncoder",
           "away_from", "near", "parse_constraint", "sentiment", "topic", "toxicity"]
