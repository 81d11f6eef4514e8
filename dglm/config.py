"""Pydantic configs, one per component, and the registry of presets (:data:`PRESETS`: ``paper``, ``mini``,
``tiny``).

Each config is exactly what the component's ``save_pretrained`` writes as
``config.json``; unknown or wrongly typed fields are refused by name when loading.

Example:
    >>> cfg = preset_config("paper")
    >>> cfg.diffusion.depth, cfg.prompt.num_soft_tokens
    (12, 8)
"""

from __future__ import annotations

import functools
import typing
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

# Limits on what a config (read from an untrusted checkpoint) or one request may ask for. Every size is
# checked against these before anything is allocated, and a component's shapes are checked against its
# weights file's header (dglm.io.load_component) before its modules are built.
# Widths of embeddings, hidden sizes and transformer widths (the largest public LMs use 16384).
MAX_DIM = 65_536
# Transformer blocks of the diffusion and prompt networks.
MAX_DEPTH = 128
# Attention heads.
MAX_HEADS = 1024
# Latent tokens of the diffusion network, soft tokens of the prompt generator.
MAX_TOKENS = 1024
# GLU hidden size as a multiple of the width.
MAX_MLP_RATIO = 64.0
# Vocabulary rows a "vocab_mixture" prompt head mixes (large LM vocabularies have ~256k tokens).
MAX_VOCAB = 1_048_576
# Parameters of one trainable component (diffusion network or prompt generator): 4 GiB in float32.
MAX_COMPONENT_PARAMS = 2**30
# Denoising steps per plan (the reference samples 250 steps; DDPM's classic schedules use 1000).
MAX_STEPS = 10_000
# Monte-Carlo samples per row for constraint guidance.
MAX_GUIDANCE_SAMPLES = 1024
# Largest classifier-free guidance weight: far beyond useful values (a few units), and small enough that
# w * v never overflows in float32 / bfloat16.
MAX_CFG_SCALE = 100.0
# Largest guidance strength: the largest float32 (a larger one overflows the guidance gradient).
MAX_STRENGTH = 3.4028234663852886e38
# Bytes the CLI reads from --input (8 MiB), characters per prefix (the decoder keeps only the last tokens
# that fit its context; a longer text only costs tokenisation), and rows (prefixes x samples) per run.
MAX_INPUT_BYTES = 8 * 2**20
MAX_PREFIX_CHARS = 32_768
MAX_ROWS = 100_000
# Rank of a decoder's LoRA adapter (dglm trains rank 16).
MAX_ADAPTER_RANK = 4096
# Tokens one continuation may ask for (the decoder's context bounds it further).
MAX_NEW_TOKENS = 16_384
# Decoder sampling temperature: below 0.01 the scaled logits overflow to inf in float32 (use greedy
# decoding instead); above 100 the distribution is uniform for every practical purpose.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.01, 100.0
# Largest repetition penalty (1 = off; the reference uses 1.2).
MAX_REPETITION_PENALTY = 100.0


class _Config(BaseModel):
    # Refuse unknown fields, NaN and infinities, and keep configs immutable, so a typo or a hostile value
    # in a JSON file is an error naming the field.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EncoderConfig(_Config):
    """The frozen sentence encoder, referenced by id (weights are not copied into checkpoints).

    Example:
        >>> EncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2", dim=384).dim
        384
    """

    name_or_path: str = Field(description=(
        "Hub id or local folder of a sentence-transformers model; also the encoder's identity for probes."))
    dim: int = Field(gt=0, le=MAX_DIM, description=(
        "Embedding size, read from the model when built; checked against the model when loaded."))


class DiffusionConfig(_Config):
    """The semantic diffusion transformer (denoiser over standardised embeddings).

    Example:
        >>> DiffusionConfig(dim=384, width=128, depth=2, heads=2).num_tokens
        32
    """

    dim: int = Field(gt=0, le=MAX_DIM, description=(
        "Embedding size d of the encoder space the diffusion runs in."))
    num_tokens: int = Field(default=32, gt=0, le=MAX_TOKENS, description=(
        "N: the latent (and the prefix embedding) are each mapped to N tokens."))
    token_features: int = Field(default=64, gt=0, le=MAX_DIM, description=(
        "c: features per token right after the input Linear (before projecting to width / 2)."))
    width: int = Field(default=768, gt=0, le=MAX_DIM, description=(
        "Transformer width (channels per token after concatenating latent and prefix halves)."))
    depth: int = Field(default=12, gt=0, le=MAX_DEPTH, description=(
        "Number of transformer blocks; the first half feeds long skips into the second half."))
    heads: int = Field(default=12, gt=0, le=MAX_HEADS, description=(
        "Attention heads; width must be divisible by heads."))
    mlp_ratio: float = Field(default=4.0, gt=0, le=MAX_MLP_RATIO, description=(
        "Hidden size of the GLU MLP as a multiple of width."))
    cond_dropout: float = Field(default=0.1, ge=0, le=1, description=(
        "Probability of replacing the prefix embedding with the learned null embedding in training (CFG)."))
    ema_decay: float = Field(default=0.9999, ge=0, lt=1, description=(
        "Decay of the exponential moving average of weights used for sampling."))

    @property
    def rank_deficit(self) -> int:
        """Directions of the d-dimensional embedding space the denoiser can neither read nor write.

        The latent enters and leaves the network through ``num_tokens * token_features`` features; when that
        is less than ``dim``, the ``dim - num_tokens * token_features`` other directions keep pure noise in
        every sample (samples then lie off the data's manifold, and the decoder follows them poorly). 0 for a
        well-shaped config.

        Example:
            >>> DiffusionConfig(dim=384, num_tokens=8, token_features=32, width=128).rank_deficit
            128
            >>> DiffusionConfig(dim=384, num_tokens=8, token_features=64, width=128).rank_deficit
            0
        """
        return max(0, self.dim - self.num_tokens * self.token_features)


class PromptConfig(_Config):
    """The prompt generator: (noisy embedding, noise level) -> k soft tokens.

    Example:
        >>> PromptConfig(dim=384, out_dim=576, width=128, depth=2, heads=2).num_soft_tokens
        8
    """

    dim: int = Field(gt=0, le=MAX_DIM, description="Embedding size d of the encoder space.")
    out_dim: int = Field(gt=0, le=MAX_DIM, description=(
        "Hidden size of the decoder (width of each soft token)."))
    num_soft_tokens: int = Field(default=8, gt=0, le=MAX_TOKENS, description=(
        "k: number of soft tokens placed after the prefix tokens."))
    width: int = Field(default=768, gt=0, le=MAX_DIM, description="Transformer width.")
    depth: int = Field(default=6, gt=0, le=MAX_DEPTH, description="Number of transformer blocks.")
    heads: int = Field(default=12, gt=0, le=MAX_HEADS, description=(
        "Attention heads; width must be divisible by heads."))
    mlp_ratio: float = Field(default=4.0, gt=0, le=MAX_MLP_RATIO, description=(
        "Hidden size of the GLU MLP as a multiple of width."))
    head: Literal["linear", "vocab_mixture"] = Field(default="linear", description=(
        '"linear": each soft token is a Linear map to the decoder width (the reference). "vocab_mixture": '
        "each soft token is a softmax mixture of the decoder's own input embeddings of ``vocab_size`` "
        "frequent tokens, so soft tokens look like (blends of) words, which a frozen decoder reads and "
        "copies from."))
    vocab_size: int = Field(default=0, ge=0, le=MAX_VOCAB, description=(
        'Vocabulary rows a "vocab_mixture" head mixes (0 for "linear").'))


class DecoderConfig(_Config):
    """The pretrained causal LM, referenced by id (its weights stay untouched).

    Example:
        >>> DecoderConfig(name_or_path="gpt2-large", hidden_size=1280).hidden_size
        1280
    """

    name_or_path: str = Field(description=(
        "Hub id or local folder of a Hugging Face causal LM (and its tokenizer)."))
    hidden_size: int = Field(gt=0, le=MAX_DIM, description=(
        "Hidden size of the LM's input embeddings, read from the model."))


class AdapterConfig(BaseModel):
    """The fields of a LoRA adapter's ``adapter_config.json`` (peft's format) that dglm checks before peft
    reads the folder; peft's other fields pass through unchecked.

    Example:
        >>> AdapterConfig(peft_type="LORA", r=16, target_modules=["q_proj", "v_proj"]).r
        16
    """

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    peft_type: Literal["LORA"] = Field(description="Only LoRA adapters are loaded.")
    r: int = Field(ge=1, le=MAX_ADAPTER_RANK, description=(
        "The adapter's rank (every targeted module's A is (r, in), its B (out, r))."))
    lora_alpha: float = Field(default=8, gt=0, le=1e6, description=(
        "Scale numerator of the LoRA update (alpha / r)."))
    target_modules: list[str] | str = Field(description=(
        "Names (last path component) of the modules the adapter wraps."))
    rank_pattern: dict[str, Annotated[int, Field(ge=1, le=MAX_ADAPTER_RANK)]] = Field(default={}, description=(
        "Per-module ranks overriding r (peft's rank_pattern), bounded like r."))


# Largest accepted decoder-side contrast weight (plan_scale, control_scale).
MAX_PLAN_SCALE = 10.0

# The fields of GenerationConfig by stage (the CLI's option groups, and which fields HF generate receives).
PLANNING_FIELDS = ("sampler", "steps", "cfg_scale", "plan_temperature", "sigma2", "compile")
CONTROL_FIELDS = ("strength", "guidance_samples", "plan_scale", "control_scale")
DECODING_FIELDS = ("max_new_tokens", "do_sample", "top_p", "temperature", "repetition_penalty")
# The command line's decoding options: HF generate's keywords, and the redraw of unlikely continuations.
DECODING_OPTIONS = (*DECODING_FIELDS, "max_nll")
# Further draws of a continuation above max_nll, at most (the likeliest attempt is kept).
MAX_NLL_REDRAWS = 2
RUN_FIELDS = ("num_samples", "batch_size", "seed", "show_progress_bar")


class GenerationConfig(_Config):
    """Every per-call setting of :meth:`DGLM.plan` and :meth:`DGLM.generate` (diffusion, guidance, decoding,
    chunking), each with its bounds, declared once. A pipeline holds one as its defaults (``DGLM.sampling``,
    saved in its checkpoint's ``dglm.json`` under ``"sampling"``); each call's keywords are merged into it and
    validated once (:meth:`merge`). The command line's ``dglm generate`` options are generated from these
    fields.

    Example:
        >>> defaults = GenerationConfig(steps=20)
        >>> call = defaults.merge(sigma2=0.1, top_p=0.8)
        >>> call.steps, call.sigma2, call.top_p, call.batch_size
        (20, 0.1, 0.8, 256)
        >>> defaults.merge(top_p=1.5)
        Traceback (most recent call last):
            ...
        ValueError: top_p=1.5: Input should be less than or equal to 1
    """

    # Strict: a bool is not a number of steps and "0.9" is not a float; ints are accepted for floats.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    sampler: Literal["ddpm", "ddim"] = Field(
        default="ddpm", description="Sampler of the semantic diffusion.")
    steps: int = Field(default=50, ge=1, le=MAX_STEPS, description="Denoising steps per plan.")
    cfg_scale: float = Field(
        default=1.0, ge=0, le=MAX_CFG_SCALE,
        description="Classifier-free guidance weight w of the diffusion (1 = off).")
    plan_temperature: float = Field(
        default=1.0, gt=0, le=1,
        description="Scale of the Gaussian noise the diffusion sampler draws: the starting noise and, for ddpm, "
                    "every step's fresh noise. 1 samples the model's distribution; lower values give plans "
                    "nearer the prefix's likely continuations, less diverse (the 'temperature' of flows and "
                    "diffusion samplers).")
    sigma2: float = Field(
        default=0.05, ge=0, le=1,
        description="Noise level sigma^2 the sampled plan is re-noised to before the prompt generator "
                    "(0 = follow the plan strictly, 1 = ignore it).")
    compile: bool = Field(
        default=False,
        description="Run the diffusion network through torch.compile (built once per pipeline; the first plan "
                    "pays the compile time, so it suits long-running processes, GPUs most; on CUDA in mode "
                    "'reduce-overhead', i.e. CUDA graphs, 3x faster than eager for the guided plan on an H200). "
                    "Where compilation fails it logs a warning and runs eagerly, with the same results.")
    strength: float = Field(
        default=20.0, ge=0, le=MAX_STRENGTH,
        description="Constraint-guidance strength lambda. A call's strength (in Python one number, or one per "
                    "prefix) wins over its Control's own, which wins over the checkpoint's default.")
    guidance_samples: int = Field(
        default=32, ge=1, le=MAX_GUIDANCE_SAMPLES,
        description="Monte-Carlo samples around x0_hat per row for constraint guidance.")
    plan_scale: float = Field(
        default=1.0, ge=1, le=MAX_PLAN_SCALE,
        description="Plan guidance w in the decoder: next-token log-probs are null + w * (plan - null), null "
                    "from a pure-noise plan's soft tokens; 1 = off, > 1 follows the plan more closely at the "
                    "cost of a second decoder pass per token.")
    control_scale: float = Field(
        default=1.0, ge=1, le=MAX_PLAN_SCALE,
        description="Control contrast w in the decoder (guided rows only): the same contrast against the "
                    "unguided plan sampled from the same noise, so only what the constraint changed in the plan "
                    "is weighted by w; 1 = off. Costs a second diffusion run and decoder pass. Exclusive with "
                    "plan_scale > 1.")
    max_new_tokens: int = Field(
        default=32, ge=1, le=MAX_NEW_TOKENS,
        description="New tokens per continuation (the decoder's context may allow fewer).")
    do_sample: bool = Field(default=True, description="Sample the next token (else greedy decoding).")
    top_p: float = Field(default=0.9, gt=0, le=1, description="Nucleus sampling mass (1 = off).")
    temperature: float | None = Field(
        default=None, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE,
        description="Sampling temperature (None: the decoder's generation config's).")
    repetition_penalty: float = Field(
        default=1.2, gt=0, le=MAX_REPETITION_PENALTY,
        description="Repetition penalty on every generated token (1 = off; < 1 favours repeats).")
    max_nll: float | None = Field(
        default=None, gt=0, le=50,
        description="Redraw a continuation whose mean per-token negative log-likelihood under the decoder's own "
                    "base LM (given the prefix, without plan, soft tokens or adapter) is above this many nats, "
                    f"up to {MAX_NLL_REDRAWS} more times from the same plan, keeping the likeliest draw: a guard "
                    "against the rare garbled continuation a soft prompt can cause. None = off; no redraw when "
                    "decoding greedily. Costs one scoring forward per continuation, plus the redraws.")
    num_samples: int = Field(default=1, ge=1, le=MAX_ROWS, description="Continuations (plans) per prefix.")
    batch_size: int = Field(
        default=256, ge=1, le=MAX_ROWS,
        description="Rows (prefixes x samples) planned and decoded at once: bounds memory for any request. "
                    "Chunk c > 0 of a call uses a seed derived from seed and c.")
    seed: int | None = Field(
        default=None, ge=0, lt=2**63,
        description="Random seed: the same seed (and batch_size) gives the same output; None: a fresh one.")
    show_progress_bar: bool = Field(default=False, description="Show a progress bar over the diffusion steps.")

    @model_validator(mode="after")
    def _one_contrast(self) -> GenerationConfig:
        if self.plan_scale != 1.0 and self.control_scale != 1.0:
            raise ValueError(f"control_scale={self.control_scale:g} and plan_scale={self.plan_scale:g}: use one "
                             f"decoder-side contrast at a time (the other must be 1)")
        return self

    def merge(self, **overrides) -> GenerationConfig:
        """This config with ``overrides`` (field names) applied: each given value checked once
        (:meth:`check`), the rest kept as they are; a bad value raises a ValueError naming each bad field, its
        value and what is accepted. None for a field that cannot be None (``steps=None``) keeps this config's
        value.

        Example:
            >>> config = GenerationConfig(steps=20)
            >>> merged = config.merge(top_p=0.5, steps=None)
            >>> merged.top_p, merged.steps, config.top_p
            (0.5, 20, 0.9)
            >>> config.merge(top_p=0)
            Traceback (most recent call last):
                ...
            ValueError: top_p=0: Input should be greater than 0
        """
        return self.apply(self.check(overrides))

    @classmethod
    def check(cls, values: dict, names: dict[str, str] | None = None) -> dict:
        """``values`` (field -> value) each checked once against its field's type and bounds, the one place a
        per-call knob is validated; None for a field that cannot be None is dropped (the default applies). A
        bad or unknown field raises one ValueError naming each (renamed by ``names``, e.g. to command-line
        flags), its value and what is accepted.

        Example:
            >>> GenerationConfig.check({"steps": 5, "top_p": None})
            {'steps': 5}
            >>> GenerationConfig.check({"steps": 0, "sigma": 2}, {"steps": "--steps"})
            Traceback (most recent call last):
                ...
            ValueError: --steps=0: Input should be greater than or equal to 1; sigma=2: Extra inputs are not \
permitted
        """
        checked, errors = {}, []
        for field, value in values.items():
            name = (names or {}).get(field, field)
            if field not in cls.model_fields:
                errors.append(f"{name}={value!r:.60}: Extra inputs are not permitted")
            elif value is not None or _nullable(field):
                try:
                    checked[field] = check_field(cls, field, value, name)
                except ValueError as e:
                    errors.append(str(e))
        if errors:
            raise ValueError("; ".join(errors))
        return checked

    def apply(self, checked: dict) -> GenerationConfig:
        """This config with ``checked`` values (from :meth:`check`, or the fields another config set) in
        place, not validated again; only the rule between fields (one decoder-side contrast) is checked.

        Example:
            >>> GenerationConfig().apply({"steps": 7}).steps
            7
        """
        return self.model_copy(update=checked)._one_contrast() if checked else self

    def overrides(self) -> dict:
        """The fields this config sets explicitly (what it changes when applied over another config's
        defaults, as :meth:`DGLM.generate`'s ``generation_config`` does).

        Example:
            >>> GenerationConfig(steps=7, top_p=0.5).overrides()
            {'steps': 7, 'top_p': 0.5}
        """
        return {k: getattr(self, k) for k in type(self).model_fields if k in self.model_fields_set}

    def saved(self) -> dict:
        """The fields a checkpoint's ``dglm.json`` records: the decoding ones only where they were set, so
        that a loaded checkpoint keeps taking the others from its decoder's ``generation_config``.

        Example:
            >>> "top_p" in GenerationConfig().saved(), GenerationConfig(top_p=0.5).saved()["top_p"]
            (False, 0.5)
        """
        return self.model_dump(mode="json", exclude={k for k in DECODING_FIELDS if k not in self.model_fields_set})

    def decoding_kwargs(self) -> dict:
        """The keywords of Hugging Face ``generate`` these settings give (``temperature`` only when set).

        Example:
            >>> GenerationConfig().decoding_kwargs()
            {'max_new_tokens': 32, 'do_sample': True, 'top_p': 0.9, 'repetition_penalty': 1.2}
        """
        return {k: getattr(self, k) for k in DECODING_FIELDS if getattr(self, k) is not None}


def _nullable(field: str) -> bool:
    """Whether None is a value of GenerationConfig's ``field`` (unknown fields pass, to be refused by name)."""
    info = GenerationConfig.model_fields.get(field)
    return info is None or type(None) in typing.get_args(info.annotation)


def check_field(model: type[BaseModel], field: str, value, name: str | None = None):
    """``value`` checked against the type and bounds of ``model``'s ``field`` alone (strictly: no bool for a
    number, no text for a number), or a ValueError naming it (as ``name``, default the field), its value and
    what is accepted.

    Example:
        >>> check_field(GenerationConfig, "strength", 30)
        30.0
        >>> check_field(GenerationConfig, "strength", -1, "strength[2]")
        Traceback (most recent call last):
            ...
        ValueError: strength[2]=-1: Input should be greater than or equal to 0
    """
    try:
        return _field_adapter(model, field).validate_python(value)
    except ValidationError as e:
        why = "; ".join(err["msg"] for err in e.errors())
        raise ValueError(f"{name or field}={value!r:.60}: {why}") from None


@functools.cache
def _field_adapter(model: type[BaseModel], field: str) -> TypeAdapter:
    info = model.model_fields[field]
    kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation  # bounds, if any
    return TypeAdapter(kind, config=ConfigDict(strict=True, allow_inf_nan=False))


def describe_errors(error, names: dict[str, str] | None = None) -> str:
    """One line from a pydantic ``ValidationError``: each bad field as ``name=value: why``, joined by ``; ``.
    ``names`` renames fields (e.g. to command-line flags).

    Example:
        >>> from pydantic import ValidationError
        >>> try:
        ...     GenerationConfig(steps=0, sigma2=2)
        ... except ValidationError as e:
        ...     print(describe_errors(e, {"steps": "--steps"}))
        --steps=0: Input should be greater than or equal to 1; sigma2=2: Input should be less than or equal to 1
    """
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"])
        name = (names or {}).get(loc, loc)
        value = err.get("input")
        shown = f"={value!r:.60}" if not isinstance(value, dict) and loc else ""
        parts.append(f"{name}{shown}: {err['msg']}" if name else err["msg"].removeprefix("Value error, "))
    return "; ".join(parts)


class DGLMConfig(_Config):
    """Everything that defines a DGLM pipeline.

    Example:
        >>> cfg = preset_config("tiny")
        >>> cfg.encoder.dim == cfg.diffusion.dim == cfg.prompt.dim, cfg.prompt.out_dim == cfg.decoder.hidden_size
        (True, True)
    """

    encoder: EncoderConfig = Field(description="The frozen sentence encoder the plans live in.")
    diffusion: DiffusionConfig = Field(description="The diffusion network that samples plans.")
    prompt: PromptConfig = Field(description="The prompt generator that turns a plan into soft tokens.")
    decoder: DecoderConfig = Field(description="The pretrained causal LM that writes the text.")
    sampling: GenerationConfig = Field(default=GenerationConfig(), description=(
        "Default generation settings (each can be overridden per call)."))


# Prefix of an encoder or decoder id that names a random-weight stand-in of the architecture after it
# (dglm.presets builds those); the ``tiny`` preset's parts exist only as such stand-ins.
RANDOM_PREFIX = "random:"

PRESETS: dict[str, DGLMConfig] = {
    # The reference's shapes (Sentence-T5-XL, GPT-2-large).
    "paper": DGLMConfig(
        encoder=EncoderConfig(name_or_path="sentence-transformers/sentence-t5-xl", dim=768),
        diffusion=DiffusionConfig(dim=768, num_tokens=32, width=768, depth=12, heads=12),
        prompt=PromptConfig(dim=768, out_dim=1280, num_soft_tokens=8, width=768, depth=6, heads=12),
        decoder=DecoderConfig(name_or_path="gpt2-large", hidden_size=1280),
        sampling=GenerationConfig(steps=250),
    ),
    # The shipped default checkpoint's shapes (all-MiniLM-L6-v2, SmolLM2-135M-Instruct), except the diffusion's
    # token_features: 64 here, 32 in the shipped denoiser, which leaves 128 of 384 directions undenoised
    # (DiffusionConfig.rank_deficit; a retrained 8 x 64 one was not better in generation, results/mini/README.md).
    "mini": DGLMConfig(
        encoder=EncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2", dim=384),
        diffusion=DiffusionConfig(dim=384, num_tokens=8, token_features=64, width=128, depth=4, heads=4,
                                  ema_decay=0.999),
        prompt=PromptConfig(dim=384, out_dim=576, num_soft_tokens=8, width=256, depth=3, heads=4,
                            head="vocab_mixture", vocab_size=8192),
        decoder=DecoderConfig(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=576),
        # Strength 100: on 100 neutral openers it kept perplexity within +25% of plain decoding for both lora3
        # (+2%) and the shipped sw1 (+18%), where strength 20 reached 24% / 35% sports (results/mini/README.md).
        # Plan temperature 0.65: chosen on the corpus's validation split (recipes/plan_temperature.py), where
        # it lowered unguided DGLM's perplexity cost on openers (1.08x -> 1.02x) and raised the topical fidelity
        # gain (+0.024 -> +0.041); on the benchmark's openers it reached 70% sports at strength 100 (T = 1: 66%).
        sampling=GenerationConfig(strength=100.0, plan_temperature=0.65),
    ),
    # Two-layer models of width 32 with random weights only, built in well under a second: tests, CPU smoke runs.
    "tiny": DGLMConfig(
        encoder=EncoderConfig(name_or_path=RANDOM_PREFIX + "tiny-bert", dim=32),
        diffusion=DiffusionConfig(dim=32, num_tokens=4, token_features=8, width=32, depth=2, heads=2),
        prompt=PromptConfig(dim=32, out_dim=32, num_soft_tokens=4, width=32, depth=2, heads=2),
        decoder=DecoderConfig(name_or_path=RANDOM_PREFIX + "tiny-gpt2", hidden_size=32),
        sampling=GenerationConfig(steps=10),
    ),
}
"""Every preset by name: network shapes, encoder and decoder ids and sampling defaults. Look one up with
:func:`preset_config`; :func:`dglm.presets.random_pipeline` builds any of them with random weights."""
# A preset's name, as config fields and command-line options accept it (the registry's keys).
PresetName = Literal[tuple(PRESETS)]


def preset_config(preset: str | DGLMConfig) -> DGLMConfig:
    """The config of a preset name in :data:`PRESETS`, or ``preset`` itself when it is a config already; every
    entry point that takes a preset (:meth:`dglm.DGLM.from_config`, :func:`dglm.presets.random_pipeline`, the
    training stages, the benchmark's ``random:<preset>``) looks it up here.

    Example:
        >>> preset_config("mini").decoder.hidden_size
        576
        >>> preset_config("tiny") is preset_config(PRESETS["tiny"])
        True
        >>> preset_config("small")
        Traceback (most recent call last):
            ...
        ValueError: preset='small' is not known; accepted: 'paper', 'mini', 'tiny' or a DGLMConfig
    """
    if isinstance(preset, DGLMConfig):
        return preset
    if not isinstance(preset, str) or preset not in PRESETS:
        names = ", ".join(map(repr, PRESETS))
        raise ValueError(f"preset={preset!r} is not known; accepted: {names} or a DGLMConfig")
    return PRESETS[preset]
