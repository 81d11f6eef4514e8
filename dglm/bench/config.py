"""The benchmark's configuration: one pydantic model, and the ``dglm bench`` options generated from its fields.

Every field carries its description; :func:`add_arguments` turns each into an option (``num_neutral`` ->
``--num-neutral``; a few keep their historic short names, see ``ALIASES``), with the field's default (or
its ``--quick`` value) as the default, so nothing is declared twice.

Example:
    >>> BenchConfig.for_quick().num_prompts, BenchConfig().prompt_sets
    (4, ['neutral', 'topical'])
"""

from __future__ import annotations

import argparse
from typing import Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo

from dglm.bench.evaluators import EVALUATOR_ID
from dglm.config import GenerationConfig
from dglm.options import add_config_options

RANDOM = "random:"  # checkpoint prefix: a random-weight preset (shapes and timing only)
COMPOSITIONS = ["topic('sports') + sentiment.positive()", "toxicity.low() + topic('sports')"]
# The benchmark's tasks (issue 30): where each system is measured.
TASKS = ("neutral", "continuation", "avoidance", "style", "graded", "composition")
Task = Literal["neutral", "continuation", "avoidance", "style", "graded", "composition"]


def _generation(field: str, description: str):
    """GenerationConfig's ``field`` (its default and bounds, declared there) with the benchmark's description."""
    return FieldInfo.merge_field_infos(GenerationConfig.model_fields[field], description=description)


class BenchConfig(BaseModel):
    """Everything one benchmark run depends on; written into the JSON report as is.

    Example:
        >>> BenchConfig(checkpoint="/ckpt/new").checkpoint
        '/ckpt/new'
    """

    quick: bool = Field(default=False, description=(
        "Smoke test: tiny random models, the decoder as its own evaluator LM, synthetic prompts, output to "
        "a fresh temporary folder (never docs/results or results)."))
    checkpoint: str = Field(default="mini", description=(
        "DGLM checkpoint folder or packaged name; `random:<preset>` for random weights (timing only)."))
    device: str = Field(default="cpu", description="Torch device for every model (cpu, cuda, cuda:1).")
    out: str | None = Field(default=None, description=(
        "Output folder: new, empty, or one dglm bench wrote before (default: a fresh ./dglm-bench/<UTC time>, "
        "or a fresh temporary folder with --quick)."))
    tasks: list[Task] = Field(default=list(TASKS), min_length=1, description=(
        "Tasks: neutral (openers), continuation (topical prefixes, vs the human topic-switch reference), "
        "avoidance (--avoidance-control on prefixes of that topic), style (an attribute words cannot name: "
        "--style-data), graded (success vs strength / steering fraction, from the neutral runs), composition "
        "(--compositions)."))
    name: str = Field(default="bench", description=(
        "File stem of the outputs: `<out>/<name>.json`, `.md`, `_*.png`."))
    corpus: str = Field(default="cache/corpus", description=(
        "Corpus folder (test.jsonl, train.jsonl) for prompts, classifier, peers."))
    prompt_sets: list[Literal["neutral", "topical"]] = Field(default=["neutral", "topical"], description=(
        "Prompt sets: neutral openers (2-5 words of test documents and sentences) and topical 32-token "
        "prefixes."))
    num_neutral: int = Field(default=100, ge=1, description="Neutral openers.")
    neutral_samples: int = Field(default=1, ge=1, description="Samples per neutral opener and seed.")
    num_prompts: int = Field(default=24, ge=1, description="Topical prefixes (one window per test document).")
    num_samples: int = Field(default=2, ge=1, description="Samples per topical prefix and seed.")
    num_references: int = Field(default=128, ge=1, description=(
        "Reference continuations for MAUVE (topical set)."))
    seeds: list[int] = Field(default=[0], min_length=1, description=(
        "Sampling seeds (one or more); every system runs once per seed."))
    prefix_tokens: int = Field(default=32, ge=1, description="Topical prefix length in decoder tokens.")
    new_tokens: int = _generation("max_new_tokens", "New tokens per continuation.")
    min_new_tokens: int | None = Field(default=None, description=(
        "Suppress eos before this many new tokens (None: the decoder may stop)."))
    batch_prompts: int = Field(default=8, ge=1, description="Prompts per generation call.")
    top_p: float = _generation("top_p", "Top-p of every system's sampling.")
    repetition_penalty: float = _generation("repetition_penalty", "Repetition penalty of every system.")
    control: str = Field(default="topic('sports')", description="The control, in the constraint syntax.")
    strengths: list[float] = Field(default=[20.0, 100.0, 300.0], description=(
        "DGLM guidance strengths (none: no guided systems)."))
    plan_temperature: float | None = Field(default=None, gt=0, le=1, description=(
        "The diffusion sampler's plan temperature for every DGLM system (None: the checkpoint's)."))
    sigma2: list[float] = Field(default=[], description=(
        "Further re-noising levels of unguided DGLM (the checkpoint's is always run)."))
    plan_scales: list[float] = Field(default=[2.0], description=(
        "Plan-guidance weights of further unguided DGLM systems."))
    guided_plan_scales: list[float] = Field(default=[2.0], description=(
        "Plan-guidance weights of further guided systems, at every strength."))
    guided_control_scales: list[float] = Field(default=[2.0], description=(
        "Control-contrast weights of further guided systems, at every strength (plan_scale 1)."))
    steps: int | None = Field(default=None, description="Diffusion steps (None: the checkpoint's).")
    steering_layers: list[int] = Field(default=[6, 9, 12, 15, 18, 21], description=(
        "Candidate decoder blocks of activation steering; the bench picks one per task by a sweep on the "
        "development split (never the test prompts)."))
    steering_scales: list[float] = Field(default=[0.05, 0.1, 0.2, 0.3, 0.5], description=(
        "Activation-steering strengths r: the vector's norm as a fraction of the mean residual norm at its "
        "layer (none: no steering)."))
    steering_pick_prompts: int = Field(default=24, ge=1, description=(
        "Development prompts (validation split) of the layer-picking sweep."))
    peer_texts_per_class: int = Field(default=300, ge=2, description=(
        "Labelled passages per class for steering vectors and FUDGE."))
    fudge_strengths: list[float] = Field(default=[1.0, 2.0, 4.0], description=(
        "FUDGE strengths (1 = Bayes rule; none: no FUDGE)."))
    fudge_top_k: int = Field(default=50, ge=1, description="Candidates FUDGE rescores per step.")
    prompt_styles: list[Literal["header", "instruction", "insistent"]] = Field(default=["header", "instruction", "insistent"], description=(
        "Prompting systems: a topic header, a chat instruction, an insistent chat instruction (none: no "
        "prompting)."))
    guided_prompt_styles: list[Literal["header", "instruction", "insistent"]] = Field(default=["instruction"], description=(
        "DGLM and prompting together: guided systems (checkpoint defaults, every strength) whose prompts are "
        "also wrapped in these prompting styles (none: no such systems)."))
    bon_n: int | None = Field(default=None, description=(
        "Best-of-N candidates: None matches each DGLM variant's wall time; 0: none."))
    bon_extra_n: list[int] = Field(default=[8], description=(
        "Further best-of-N with these fixed N (a ceiling)."))
    compositions: list[str] = Field(default=COMPOSITIONS, description=(
        "Composed controls, DGLM vs activation steering on neutral openers (none: skip)."))
    composition_strengths: list[float] = Field(default=[20.0, 100.0], description=(
        "DGLM strengths of the composition runs."))
    composition_scales: list[float] = Field(default=[0.1, 0.2], description=(
        "Steering strengths r (fractions of the residual norm) of the composition runs."))
    avoidance_control: str = Field(default="-topic('sports')", description=(
        "Avoidance task: the control (a negated topic); prompts are prefixes of test documents of that topic."))
    num_avoidance: int = Field(default=40, ge=1, description=(
        "Avoidance task: prefixes (several per test document of the topic, at sentence starts)."))
    avoidance_samples: int = Field(default=1, ge=1, description="Avoidance task: samples per prefix and seed.")
    style_data: str = Field(default="cache/style/fortunes.jsonl", description=(
        "Style task: the texts built by recipes/build_style_data.py (probe, evaluator and few-shot splits)."))
    strict_ppl_limit: float = Field(default=1.10, gt=0, description=(
        "Tasks: the stricter perplexity limit reported beside --ppl-limit."))
    ppl_limit: float = Field(default=1.25, gt=0, description=(
        "Frontier: perplexity at most this times the set's reference (plain decoding for neutral openers, "
        "the human topic-switch text for topical prefixes)."))
    time_limit: float = Field(default=1.5, gt=0, description=(
        "Frontier: wall time at most this times plain decoding's."))
    targets: str | None = Field(default=None, description=(
        "JSON file of acceptance targets to evaluate in the report (e.g. recipes/bench_targets.json)."))
    evaluator_lm: str = Field(default=EVALUATOR_ID, description=(
        "Evaluator LM id or folder; 'decoder' = the decoder itself (not independent)."))
    evaluator_dtype: Literal["float32", "bfloat16"] = Field(default="float32", description=(
        "Evaluator LM dtype."))
    topic_classifier: Literal["corpus", "quick"] = Field(default="corpus", description=(
        "Topic evaluator training data."))
    mauve_seeds: list[int] = Field(default=[0, 1, 2], description=(
        "K-means seeds of MAUVE (topical set; none: no MAUVE)."))
    runtime_new_tokens: list[int] = Field(default=[64], description=(
        "Runtime table lengths (none: no runtime table)."))
    runtime_batch_sizes: list[int] = Field(default=[16], description=(
        "Runtime table batch sizes (none: no runtime table)."))
    runtime_repeats: int = Field(default=1, ge=0, description="Timed calls per runtime cell (median).")
    runtime_cell_limit_s: float = Field(default=240.0, description=(
        "Seconds; a system's longer cells are skipped once one takes over half of it."))
    command: str = Field(default="", description=(
        "The command line that produced this config (for the report)."))

    @classmethod
    def for_example(cls, **overrides) -> BenchConfig:
        """The smallest ``--quick`` run, for examples: 2 neutral openers and 2 topical prefixes, 4 new tokens,
        no steering or FUDGE sweep (``overrides`` replace any of it).

        Example:
            >>> config = BenchConfig.for_example(seeds=[0, 1])
            >>> config.quick, config.num_neutral, config.new_tokens, config.steering_scales, config.seeds
            (True, 2, 4, [], [0, 1])
        """
        return cls.for_quick(**{**dict(steering_scales=[], fudge_strengths=[], num_neutral=2, num_prompts=2,
                                       new_tokens=4, min_new_tokens=4), **overrides})

    @classmethod
    def for_quick(cls, **overrides) -> BenchConfig:
        """The ``--quick`` settings: tiny random pipeline, a few prompts, 8 new tokens, small sweeps.

        Example (``overrides`` replace quick settings):
            >>> config = BenchConfig.for_quick(num_neutral=2)
            >>> config.checkpoint, config.num_neutral, config.new_tokens, config.evaluator_lm
            ('random:tiny', 2, 8, 'decoder')
        """
        quick = dict(quick=True, checkpoint=RANDOM + "tiny", name="bench-quick", num_neutral=4, num_prompts=4,
                     num_samples=2, neutral_samples=2, num_references=4, prefix_tokens=8, new_tokens=8,
                     min_new_tokens=8, batch_prompts=4, strengths=[100.0], sigma2=[1.0], plan_scales=[2.0],
                     guided_plan_scales=[2.0], guided_control_scales=[2.0], steps=5, steering_layers=[0, 1],
                     steering_scales=[0.5], steering_pick_prompts=2, peer_texts_per_class=40,
                     fudge_strengths=[4.0], fudge_top_k=50, prompt_styles=["header", "instruction"], bon_extra_n=[3],
                     composition_strengths=[100.0], composition_scales=[0.5],
                     num_avoidance=4, style_data="quick", evaluator_lm="decoder",
                     topic_classifier="quick", mauve_seeds=[0], runtime_new_tokens=[8], runtime_batch_sizes=[2],
                     runtime_cell_limit_s=10.0)
        return cls(**{**quick, **overrides})


# Historic option names, kept beside the generated ones: field -> flag.
ALIASES = {"num_prompts": "--prompts", "num_samples": "--samples", "num_references": "--references",
           "runtime_cell_limit_s": "--runtime-cell-limit"}


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``dglm bench`` options, one per :class:`BenchConfig` field (``command`` excepted), generated by
    :func:`dglm.options.add_config_options`; a list option given with no values is an empty list (that
    family of systems is skipped). Defaults are left to the config (or its ``--quick`` values).

    Example:
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--strengths", "--num-neutral", "7"])
        >>> args.strengths, args.num_neutral, hasattr(args, "checkpoint")
        ([], 7, False)
    """
    add_config_options(parser, BenchConfig, exclude=("command",), list_nargs="*",
                       aliases={name: [flag] for name, flag in ALIASES.items()})
    return parser


def config_from_args(args: argparse.Namespace, command: str = "") -> BenchConfig:
    """A :class:`BenchConfig` from parsed arguments: the defaults (or ``--quick`` ones) with what was given.

    Example:
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--quick", "--samples", "3"])
        >>> c = config_from_args(args)
        >>> c.quick, c.num_samples, c.checkpoint
        (True, 3, 'random:tiny')
    """
    given = {k: v for k, v in vars(args).items() if k in BenchConfig.model_fields and k != "quick"}
    given["command"] = command
    try:
        return BenchConfig.for_quick(**given) if getattr(args, "quick", False) else BenchConfig(**given)
    except ValidationError as e:
        raise ValueError(option_errors(e)) from None


def option_errors(error: ValidationError) -> str:
    """A validation error of :class:`BenchConfig` in the words of the command line: each bad option, the
    value given and what it accepts.

    Example:
        >>> args = add_arguments(argparse.ArgumentParser()).parse_args(["--seeds"])
        >>> config_from_args(args)
        Traceback (most recent call last):
            ...
        ValueError: --seeds: got [], needs at least 1 value (List should have at least 1 item after validation, not 0)
    """
    parts = []
    for err in error.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        flag = ALIASES.get(field, "--" + field.replace("_", "-"))
        needs = f"needs at least {err['ctx']['min_length']} value" + ("s" if err["ctx"]["min_length"] > 1 else "") \
            if err["type"] == "too_short" else "not accepted"
        parts.append(f"{flag}: got {err.get('input')!r}, {needs} ({err['msg']})")
    return "; ".join(parts)
