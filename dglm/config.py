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

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


# Largest accepted decoder-side contrast weight (plan_scale, control_scale), in configs and per call.
MAX_PLAN_SCALE = 10.0


class SamplingConfig(_Config):
    """Default inference settings; every one can be overridden per call.

    Example:
        >>> SamplingConfig().sigma2
        0.05
    """

    # Sampler for the semantic diffusion.
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    # Number of denoising steps.
    steps: int = Field(default=50, gt=0, le=MAX_STEPS)
    # Classifier-free guidance weight w (1 = off).
    cfg_scale: float = Field(default=1.0, ge=0, le=MAX_CFG_SCALE)
    # Noise level sigma^2 the sampled plan is re-noised to before the prompt generator (0 = follow it
    # strictly, 1 = ignore it).
    sigma2: float = Field(default=0.05, ge=0, le=1)
    # Monte-Carlo samples around x0_hat per row for constraint guidance.
    guidance_samples: int = Field(default=32, gt=0, le=MAX_GUIDANCE_SAMPLES)
    # Default constraint-guidance strength lambda.
    strength: float = Field(default=20.0, ge=0, le=MAX_STRENGTH)
    # Plan guidance w on the decoder's side (dglm.plan_guidance): next-token log-probs are
    # null + w * (plan - null), null from a pure-noise plan's soft tokens; 1 = off, > 1 follows the plan
    # more closely at the cost of a second decoder pass per token.
    plan_scale: float = Field(default=1.0, ge=1, le=MAX_PLAN_SCALE)
    # Control contrast w on the decoder's side (guided generation only): the same contrast, against the
    # unguided plan sampled from the same noise instead of a null plan, so only what the constraint changed
    # in the plan is weighted by w; 1 = off. Costs a second diffusion run and decoder pass. Exclusive with
    # plan_scale > 1.
    control_scale: float = Field(default=1.0, ge=1, le=MAX_PLAN_SCALE)
    # Run the diffusion network through torch.compile when planning (its forward and the guidance backward;
    # built once per pipeline). The first plan pays the compile time (tens of seconds on a CPU), so it suits
    # long-running processes, GPUs most. Where compilation fails (e.g. no C++ compiler for the CPU backend) it
    # logs a warning and runs eagerly, with the same results. A setting of the pipeline, not of a call.
    compile: bool = False


class DecodingOptions(_Config):
    """The decoder's sampling settings one request may set, with their bounds (checked before anything runs;
    :meth:`DGLM.generate` checks the same keywords of HF ``generate``).

    Example:
        >>> DecodingOptions(top_p=1.0).repetition_penalty
        1.2
        >>> DecodingOptions(top_p=1.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for DecodingOptions
        top_p
          Input should be less than or equal to 1 ...
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)

    max_new_tokens: int = Field(default=32, ge=1, le=MAX_NEW_TOKENS, description=(
        "New tokens per continuation (the decoder's context may allow fewer; that is checked when it is "
        "loaded)."))
    top_p: float = Field(default=0.9, gt=0, le=1, description="Nucleus sampling mass, in (0, 1] (1 = off).")
    temperature: float | None = Field(default=None, ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE, description=(
        "Sampling temperature (None: the decoder's generation config's)."))
    repetition_penalty: float = Field(default=1.2, gt=0, le=MAX_REPETITION_PENALTY, description=(
        "Repetition penalty on every generated token, > 0 (1 = off; < 1 favours repeats)."))


def describe_errors(error, names: dict[str, str] | None = None) -> str:
    """One line from a pydantic ``ValidationError``: each bad field as ``name=value: why``, joined by ``; ``.
    ``names`` renames fields (e.g. to command-line flags).

    Example:
        >>> from pydantic import ValidationError
        >>> try:
        ...     SamplingConfig(steps=0, sigma2=2)
        ... except ValidationError as e:
        ...     print(describe_errors(e, {"steps": "--steps"}))
        --steps=0: Input should be greater than 0; sigma2=2: Input should be less than or equal to 1
    """
    parts = []
    for err in error.errors():
        loc = ".".join(str(x) for x in err["loc"])
        name = (names or {}).get(loc, loc)
        value = err.get("input")
        shown = f"={value!r:.60}" if not isinstance(value, dict) else ""
        parts.append(f"{name}{shown}: {err['msg']}")
    return "; ".join(parts)


def check_decoding_kwargs(kwargs: dict) -> None:
    """Check the decoder settings among HF ``generate`` keywords against :class:`~dglm.config.DecodingOptions`
    (``top_p`` in (0, 1], ``repetition_penalty`` > 0, ``temperature`` in [0.01, 100], ...).

    Example:
        >>> check_decoding_kwargs({"top_p": 0.9, "do_sample": True})
        >>> check_decoding_kwargs({"repetition_penalty": 0})
        Traceback (most recent call last):
            ...
        ValueError: repetition_penalty=0: Input should be greater than 0
    """
    given = {k: kwargs[k] for k in DecodingOptions.model_fields if kwargs.get(k) is not None}
    try:
        DecodingOptions.model_validate(given)
    except ValidationError as e:
        raise ValueError(describe_errors(e)) from None


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
    sampling: SamplingConfig = Field(default=SamplingConfig(), description=(
        "Default inference settings (each can be overridden per call)."))


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
        sampling=SamplingConfig(steps=250),
    ),
    # The shipped default checkpoint's shapes (all-MiniLM-L6-v2, SmolLM2-135M-Instruct).
    "mini": DGLMConfig(
        encoder=EncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2", dim=384),
        diffusion=DiffusionConfig(dim=384, num_tokens=8, token_features=32, width=128, depth=4, heads=4,
                                  ema_decay=0.999),
        prompt=PromptConfig(dim=384, out_dim=576, num_soft_tokens=8, width=256, depth=3, heads=4,
                            head="vocab_mixture", vocab_size=8192),
        decoder=DecoderConfig(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=576),
        # Strength 100: on 100 neutral openers it kept perplexity within +25% of plain decoding for both lora3
        # (+2%) and the shipped sw1 (+18%), where strength 20 reached 24% / 35% sports (docs/results/mini.md).
        sampling=SamplingConfig(strength=100.0),
    ),
    # Two-layer models of width 32 with random weights only, built in well under a second: tests, CPU smoke runs.
    "tiny": DGLMConfig(
        encoder=EncoderConfig(name_or_path=RANDOM_PREFIX + "tiny-bert", dim=32),
        diffusion=DiffusionConfig(dim=32, num_tokens=4, token_features=8, width=32, depth=2, heads=2),
        prompt=PromptConfig(dim=32, out_dim=32, num_soft_tokens=4, width=32, depth=2, heads=2),
        decoder=DecoderConfig(name_or_path=RANDOM_PREFIX + "tiny-gpt2", hidden_size=32),
        sampling=SamplingConfig(steps=10),
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
