"""The settings of each ``dglm train`` stage, as pydantic models whose fields are the command line's options
(:mod:`dglm.training.cli` generates them); the stages themselves are in :mod:`dglm.training.stages`.

Example:
    >>> PromptStageConfig(work="w", run="lora", training={"steps": 10}).training.steps
    10
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dglm.config import PresetName
from dglm.training.train_diffusion import DiffusionTrainingConfig
from dglm.training.train_prompt import PromptTrainingConfig

WORK = Field(default="cache/dglm", description="Working folder of the stages (data, runs and trained parts).")
PRESET = Field(default="mini", description=(
    "Preset whose network shapes are used (dimensions always come from the encoder and decoder), a name in "
    "dglm.config.PRESETS."))
RUN_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # one folder name under WORK/runs, never a path
OVERWRITE = Field(default=False, description=(
    "Replace outputs that are not this stage's own earlier output (a folder with other files, a JSON file of "
    "another kind, a cache made with other settings); without it they are refused, naming what would be lost."))

# Upper bounds of sizes and counts, checked before anything is allocated: a setting (of the stage or of its
# training config) above its bound is refused by name. Generous for real runs, far below what exhausts memory.
MAX_SIZES = {"window": 8192, "per_window": 64, "max_prefix": 8192, "eval_prefix": 8192,
             "max_train_windows": 100_000_000, "batch_size": 65_536, "bow_batch_size": 1_048_576,
             "lora_rank": 1024, "steps": 100_000_000, "warmup": 100_000_000, "save_every": 100_000_000,
             "eval_every": 100_000_000, "eval_limit": 1_000_000, "vocab_skip": 10_000_000, "opener_words": 1024,
             "max_continuation": 8192, "bow_pretrain_steps": 100_000_000, "prefix_free_steps": 100_000_000}


def _check_values(values: dict, where: str) -> None:
    for name, value in values.items():
        if isinstance(value, dict):
            _check_values(value, f"{where}{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where}{name}={value}; accepted: a finite number")
        elif isinstance(value, list) and any(isinstance(v, float) and not math.isfinite(v) for v in value):
            raise ValueError(f"{where}{name}={value}; accepted: finite numbers")
        elif isinstance(value, int) and not isinstance(value, bool) and name in MAX_SIZES \
                and value > MAX_SIZES[name]:
            raise ValueError(f"{where}{name}={value} is above the limit {MAX_SIZES[name]:,} "
                             f"(dglm.training.stage_configs.MAX_SIZES)")


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite_and_bounded(self):
        _check_values(self.model_dump(), "")  # the training config and model overrides included
        _check_device(getattr(self, "device", None))
        return self


def _check_device(device: str | None) -> None:
    if device is not None:
        import torch

        try:
            kind = torch.device(device).type
        except (RuntimeError, ValueError):
            raise ValueError(f"device={device!r} is not a torch device; accepted: cpu, cuda, cuda:N, mps") from None
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}, but CUDA is not available here; accepted: cpu (or leave it unset)")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r}, but MPS is not available here; accepted: cpu (or leave it unset)")


class PrepareConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.prepare`.

    Example:
        >>> config = PrepareConfig(data="texts/", encoder="sentence-transformers/all-MiniLM-L6-v2",
        ...                        decoder="HuggingFaceTB/SmolLM2-135M-Instruct", window=32)
        >>> config.work, config.window, config.per_window, config.validation_fraction
        ('cache/dglm', 32, 2, 0.05)
    """

    work: str = WORK
    data: str = Field(description=(
        "Training texts: a folder of .txt files (one document each, searched recursively), a JSON Lines file "
        "(one object per line, the text under --text-field), a corpus folder holding train.jsonl and "
        "validation.jsonl (recipes/build_corpus.py), or hf:NAME for a Hugging Face datasets dataset (a hub "
        "name or a save_to_disk folder; needs the datasets package)."))
    validation: str | None = Field(default=None, description=(
        "Held-out texts, in any form --data accepts; default: a corpus folder's validation.jsonl, else "
        "--validation-fraction of the documents, chosen by a hash of their id."))
    validation_fraction: float = Field(default=0.05, gt=0, lt=1, description=(
        "Share of the documents held out when --validation is not given."))
    text_field: str = Field(default="text", description="Key of the text in JSON Lines records and datasets.")
    hf_split: str = Field(default="train", description="Split of a datasets dataset to read.")
    encoder: str = Field(description="Sentence encoder: a sentence-transformers hub id or folder.")
    decoder: str = Field(description=(
        "Decoder whose tokenizer cuts the windows: a Hugging Face causal LM hub id or folder (the prompt stage "
        "trains for it by default)."))
    window: int = Field(default=64, ge=2, description="Tokens per window (windows never cross documents).")
    per_window: int = Field(default=2, gt=0, description="Random word-boundary splits per training window.")
    max_prefix: int = Field(default=48, ge=0, description="Longest training prefix, in tokens.")
    eval_prefix: int = Field(default=32, ge=1, description="Prefix length of the held-out windows' fixed split.")
    source_weights: list[str] = Field(default_factory=list, description=(
        "Balance the training documents' sources (a corpus folder only), as SOURCE=WEIGHT entries naming every "
        "source (e.g. wikipedia=1 austen=0.25 sotu=1): whole documents of over-represented sources are left "
        "out so each source's share of the words is its weight's share (dglm.data.corpus.balance_sources); "
        "held-out texts are unchanged. Empty: every document."))
    max_train_windows: int = Field(default=0, ge=0, description=(
        "Embed a random subset of this many training windows (0 = all)."))
    prefix_embeddings: bool = Field(default=True, description=(
        "Embed the training prefixes (only the diffusion stage reads them)."))
    batch_size: int = Field(default=128, gt=0, description="Encoder batch size.")
    device: str | None = Field(default=None, description="Device of the encoder (default: its own choice).")
    seed: int = Field(default=0, description="Seed of the splits and the subset.")
    overwrite: bool = OVERWRITE


    @field_validator("source_weights")
    @classmethod
    def _weights(cls, value: list[str]) -> list[str]:
        from dglm.data.corpus import parse_source_weights

        parse_source_weights(value)
        return value


class DiffusionStageConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.diffusion`; ``model`` overrides fields of the preset's ``DiffusionConfig``.

    Example:
        >>> config = DiffusionStageConfig(work="w", preset="tiny", model={"depth": 4}, training={"steps": 40})
        >>> config.model, config.training.steps, config.from_checkpoint
        ({'depth': 4}, 40, None)
    """

    work: str = WORK
    from_checkpoint: str | None = Field(default=None, description=(
        "Reuse this DGLM checkpoint's diffusion model and standardisation statistics (a folder or a packaged "
        "name such as mini) instead of training; its encoder must be the prepared one."))
    preset: PresetName = PRESET
    model: dict = Field(default_factory=dict, description="DiffusionConfig fields that differ from the preset's.")
    training: DiffusionTrainingConfig = Field(default_factory=DiffusionTrainingConfig, description=(
        "Optimisation settings of the diffusion model."))
    overwrite: bool = OVERWRITE


class PromptStageConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.prompt`; ``model`` overrides fields of the preset's ``PromptConfig``.

    Example:
        >>> config = PromptStageConfig(work="w", run="vm", model={"head": "vocab_mixture"}, vocab_skip=100,
        ...                            training={"lora_rank": 16})
        >>> config.model["head"], config.vocab_skip, config.training.lora_rank, config.decoder
        ('vocab_mixture', 100, 16, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", pattern=RUN_NAME, description=(
        "Name of the run folder under WORK/runs (letters, digits, '.', '_', '-')."))
    decoder: str | None = Field(default=None, description=(
        "Decoder to train for: a hub id or folder with the prepared tokenizer (default: the prepared one)."))
    preset: PresetName = PRESET
    init_from: str | None = Field(default=None, pattern=RUN_NAME, description=(
        "Start the generator from WORK/runs/INIT_FROM/prompt (a new run with its own optimizer)."))
    init_from_checkpoint: str | None = Field(default=None, description=(
        "Start from a DGLM checkpoint folder's prompt generator and decoder adapter, both trained on."))
    vocab_skip: int = Field(default=0, ge=0, description=(
        "vocab_mixture heads: leave out this many most frequent tokens (function words, punctuation)."))
    device: str | None = Field(default=None, description="Device of the decoder (default: accelerate's).")
    model: dict = Field(default_factory=dict, description="PromptConfig fields that differ from the preset's.")
    training: PromptTrainingConfig = Field(default_factory=PromptTrainingConfig, description=(
        "Optimisation settings of the prompt generator (and its adapter)."))
    overwrite: bool = OVERWRITE

    @model_validator(mode="after")
    def _run_names(self):
        if self.run == "diffusion":
            raise ValueError("run='diffusion' is the diffusion stage's folder (WORK/runs/diffusion); choose another "
                             "--run name")
        if self.init_from is not None and self.init_from == self.run:
            raise ValueError(f"init_from={self.init_from!r} is the run itself; start from another run")
        return self


class EvaluateConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.evaluate`.

    Example:
        >>> config = EvaluateConfig(work="w", run="r1", sigma2=[0.05, 0.5, 1.0])
        >>> config.sigma2[0], config.eval_limit, config.out_json
        (0.05, 200, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", pattern=RUN_NAME, description="Prompt run to evaluate (WORK/runs/RUN).")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    checkpoint_adapter: str | None = Field(default=None, description=(
        "Decoder adapter folder for a run that has none of its own."))
    sigma2: list[float] = Field(default=[0.05], min_length=1, description=(
        "Re-noising level(s): the first gives the plan-use numbers; with several, the noise-knob curve over "
        "all of them, in increasing order."))
    eval_limit: int = Field(default=200, gt=1, description="Held-out pairs evaluated.")
    out_json: str | None = Field(default=None, description="Where to write the JSON (default: WORK/runs/RUN/plan_use.json).")
    device: str | None = Field(default=None, description="Device of the decoder.")
    overwrite: bool = OVERWRITE

    @field_validator("sigma2")
    @classmethod
    def _variances(cls, sigma2):
        bad = [v for v in sigma2 if not 0 <= v <= 1]
        if bad:
            raise ValueError(f"sigma2={sigma2}: {bad[0]} is not a variance in [0, 1] (the plan is re-noised as "
                             f"sqrt(1 - sigma2) * plan + sqrt(sigma2) * noise)")
        return sigma2


class ExportConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.export`.

    Example:
        >>> ExportConfig(work="w", run="r1").preset
        'mini'
    """

    work: str = WORK
    run: str = Field(default="prompt", pattern=RUN_NAME, description="Prompt run whose latest state is exported.")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    preset: PresetName = Field(default="mini", description=(
        "For a run without prompt_config.json (started before dglm train): the preset of its generator's shape."))
    model: dict = Field(default_factory=dict, description="... and the PromptConfig fields it changed.")
    overwrite: bool = OVERWRITE


class AssembleConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.assemble`.

    Example:
        >>> config = AssembleConfig(work="w", run="r1", out="checkpoint", license="apache-2.0")
        >>> config.out, config.probes, config.preset
        ('checkpoint', None, 'mini')
    """

    work: str = WORK
    run: str = Field(default="prompt", pattern=RUN_NAME, description="Prompt run to ship (WORK/runs/RUN).")
    out: str | None = Field(default=None, description="Checkpoint folder to write (default: WORK/checkpoint).")
    decoder: str | None = Field(default=None, description="Decoder id recorded in the checkpoint (default: the prepared one).")
    probes: str | None = Field(default=None, description="Probe registry folder to ship (default: WORK/probes if present).")
    preset: PresetName = Field(default="mini", description="Preset whose sampling defaults the checkpoint records.")
    license: str | None = Field(default=None, description="Licence in the model card's metadata (default: unknown).")
    card: str | None = Field(default=None, description="A Markdown file appended to the model card (e.g. results).")
    overwrite: bool = OVERWRITE


# ------------------------------------------------------------------------------------------------- helpers
