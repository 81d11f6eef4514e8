"""The settings of each ``dglm train`` stage, as pydantic models whose fields are the command line's options
(:mod:`dglm.training.cli` generates them); the stages themselves are in :mod:`dglm.training.stages`.

Example:
    >>> PromptStageConfig(work="w", run="lora", training={"steps": 10}).training.steps
    10
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dglm.config import PresetName
from dglm.training.train_diffusion import DiffusionTrainingConfig
from dglm.training.train_prompt import PromptTrainingConfig

WORK = Field(default="cache/dglm", description="Working folder of the stages (data, runs and trained parts).")
PRESET = Field(default="mini", description=(
    "Preset whose network shapes are used (dimensions always come from the encoder and decoder), a name in "
    "dglm.config.PRESETS."))


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class PromptStageConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.prompt`; ``model`` overrides fields of the preset's ``PromptConfig``.

    Example:
        >>> config = PromptStageConfig(work="w", run="vm", model={"head": "vocab_mixture"}, vocab_skip=100,
        ...                            training={"lora_rank": 16})
        >>> config.model["head"], config.vocab_skip, config.training.lora_rank, config.decoder
        ('vocab_mixture', 100, 16, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Name of the run folder under WORK/runs.")
    decoder: str | None = Field(default=None, description=(
        "Decoder to train for: a hub id or folder with the prepared tokenizer (default: the prepared one)."))
    preset: PresetName = PRESET
    init_from: str | None = Field(default=None, description=(
        "Start the generator from WORK/runs/INIT_FROM/prompt (a new run with its own optimizer)."))
    init_from_checkpoint: str | None = Field(default=None, description=(
        "Start from a DGLM checkpoint folder's prompt generator and decoder adapter, both trained on."))
    vocab_skip: int = Field(default=0, ge=0, description=(
        "vocab_mixture heads: leave out this many most frequent tokens (function words, punctuation)."))
    device: str | None = Field(default=None, description="Device of the decoder (default: accelerate's).")
    model: dict = Field(default_factory=dict, description="PromptConfig fields that differ from the preset's.")
    training: PromptTrainingConfig = Field(default_factory=PromptTrainingConfig, description=(
        "Optimisation settings of the prompt generator (and its adapter)."))


class EvaluateConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.evaluate`.

    Example:
        >>> config = EvaluateConfig(work="w", run="r1", sigma2=[0.05, 0.5, 1.0])
        >>> config.sigma2[0], config.eval_limit, config.out_json
        (0.05, 200, None)
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run to evaluate (WORK/runs/RUN).")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    checkpoint_adapter: str | None = Field(default=None, description=(
        "Decoder adapter folder for a run that has none of its own."))
    sigma2: list[float] = Field(default=[0.05], min_length=1, description=(
        "Re-noising level(s): the first gives the plan-use numbers; with several, the noise-knob curve over "
        "all of them, in increasing order."))
    eval_limit: int = Field(default=200, gt=1, description="Held-out pairs evaluated.")
    out_json: str | None = Field(default=None, description="Where to write the JSON (default: WORK/runs/RUN/plan_use.json).")
    device: str | None = Field(default=None, description="Device of the decoder.")


class ExportConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.export`.

    Example:
        >>> ExportConfig(work="w", run="r1").preset
        'mini'
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run whose latest state is exported.")
    decoder: str | None = Field(default=None, description="Decoder (default: the prepared one).")
    preset: PresetName = Field(default="mini", description=(
        "For a run without prompt_config.json (started before dglm train): the preset of its generator's shape."))
    model: dict = Field(default_factory=dict, description="... and the PromptConfig fields it changed.")


class AssembleConfig(_Stage):
    """Settings of :func:`~dglm.training.stages.assemble`.

    Example:
        >>> config = AssembleConfig(work="w", run="r1", out="checkpoint", license="apache-2.0")
        >>> config.out, config.probes, config.preset
        ('checkpoint', None, 'mini')
    """

    work: str = WORK
    run: str = Field(default="prompt", description="Prompt run to ship (WORK/runs/RUN).")
    out: str | None = Field(default=None, description="Checkpoint folder to write (default: WORK/checkpoint).")
    decoder: str | None = Field(default=None, description="Decoder id recorded in the checkpoint (default: the prepared one).")
    probes: str | None = Field(default=None, description="Probe registry folder to ship (default: WORK/probes if present).")
    preset: PresetName = Field(default="mini", description="Preset whose sampling defaults the checkpoint records.")
    license: str | None = Field(default=None, description="Licence in the model card's metadata (default: unknown).")
    card: str | None = Field(default=None, description="A Markdown file appended to the model card (e.g. results).")


# ------------------------------------------------------------------------------------------------- helpers
