"""Pydantic configs, one per component, and the presets ``mini`` and ``paper``.

Each config is exactly what the component's ``save_pretrained`` writes as
``config.json``; unknown or wrongly typed fields are refused by name when loading.

Example:
    >>> cfg = DGLMConfig.preset("paper")
    >>> cfg.diffusion.depth, cfg.prompt.num_soft_tokens
    (12, 8)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Config(BaseModel):
    # Refuse unknown fields and keep configs immutable, so a typo in a JSON file is an error.
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Config):
    """The frozen sentence encoder, referenced by id (weights are not copied into checkpoints).

    Example:
        >>> EncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2", dim=384).dim
        384
    """

    # Hub id or local folder of a sentence-transformers model; also the encoder's identity for probes.
    name_or_path: str
    # Embedding size, read from the model when built; checked against the model when loaded.
    dim: int = Field(gt=0)


class DiffusionConfig(_Config):
    """The semantic diffusion transformer (denoiser over standardised embeddings).

    Example:
        >>> DiffusionConfig(dim=384, width=128, depth=2, heads=2).num_tokens
        32
    """

    # Embedding size d of the encoder space the diffusion runs in.
    dim: int = Field(gt=0)
    # N: the latent (and the prefix embedding) are each mapped to N tokens.
    num_tokens: int = Field(default=32, gt=0)
    # c: features per token right after the input Linear (before projecting to width / 2).
    token_features: int = Field(default=64, gt=0)
    # Transformer width (channels per token after concatenating latent and prefix halves).
    width: int = Field(default=768, gt=0)
    # Number of transformer blocks; the first half feeds long skips into the second half.
    depth: int = Field(default=12, gt=0)
    # Attention heads; width must be divisible by heads.
    heads: int = Field(default=12, gt=0)
    # Hidden size of the GLU MLP as a multiple of width.
    mlp_ratio: float = Field(default=4.0, gt=0)
    # Probability of replacing the prefix embedding with the learned null embedding in training (CFG).
    cond_dropout: float = Field(default=0.1, ge=0, le=1)
    # Decay of the exponential moving average of weights used for sampling.
    ema_decay: float = Field(default=0.9999, ge=0, lt=1)


class PromptConfig(_Config):
    """The prompt generator: (noisy embedding, noise level) -> k soft tokens.

    Example:
        >>> PromptConfig(dim=384, out_dim=576, width=128, depth=2, heads=2).num_soft_tokens
        8
    """

    # Embedding size d of the encoder space.
    dim: int = Field(gt=0)
    # Hidden size of the decoder (width of each soft token).
    out_dim: int = Field(gt=0)
    # k: number of soft tokens placed after the prefix tokens.
    num_soft_tokens: int = Field(default=8, gt=0)
    # Transformer width.
    width: int = Field(default=768, gt=0)
    # Number of transformer blocks.
    depth: int = Field(default=6, gt=0)
    # Attention heads; width must be divisible by heads.
    heads: int = Field(default=12, gt=0)
    # Hidden size of the GLU MLP as a multiple of width.
    mlp_ratio: float = Field(default=4.0, gt=0)
    # "linear": each soft token is a Linear map to the decoder width (the reference). "vocab_mixture": each
    # soft token is a softmax mixture of the decoder's own input embeddings of ``vocab_size`` frequent tokens,
    # so soft tokens look like (blends of) words, which a frozen decoder reads and copies from.
    head: Literal["linear", "vocab_mixture"] = "linear"
    # Vocabulary rows a "vocab_mixture" head mixes (0 for "linear").
    vocab_size: int = Field(default=0, ge=0)


class DecoderConfig(_Config):
    """The pretrained causal LM, referenced by id (its weights stay untouched).

    Example:
        >>> DecoderConfig(name_or_path="gpt2-large", hidden_size=1280).hidden_size
        1280
    """

    # Hub id or local folder of a Hugging Face causal LM (and its tokenizer).
    name_or_path: str
    # Hidden size of the LM's input embeddings, read from the model.
    hidden_size: int = Field(gt=0)


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
    steps: int = Field(default=50, gt=0)
    # Classifier-free guidance weight w (1 = off).
    cfg_scale: float = Field(default=1.0, ge=0)
    # Noise level sigma^2 the sampled plan is re-noised to before the prompt generator (0 = follow it
    # strictly, 1 = ignore it).
    sigma2: float = Field(default=0.05, ge=0, le=1)
    # Monte-Carlo samples around x0_hat per row for constraint guidance.
    guidance_samples: int = Field(default=32, gt=0)
    # Default constraint-guidance strength lambda.
    strength: float = Field(default=20.0, ge=0)
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


class DGLMConfig(_Config):
    """Everything that defines a DGLM pipeline.

    Example:
        >>> DGLMConfig.preset("mini").decoder.hidden_size
        576
    """

    encoder: EncoderConfig
    diffusion: DiffusionConfig
    prompt: PromptConfig
    decoder: DecoderConfig
    sampling: SamplingConfig = SamplingConfig()

    @classmethod
    def preset(cls, name: str) -> DGLMConfig:
        """``"paper"``: the reference's shapes; ``"mini"``: the shipped default's shapes."""
        if name not in PRESETS:
            raise ValueError(f"preset={name!r} is not known; accepted: {sorted(PRESETS)}")
        return PRESETS[name]


PRESETS: dict[str, DGLMConfig] = {
    "paper": DGLMConfig(
        encoder=EncoderConfig(name_or_path="sentence-transformers/sentence-t5-xl", dim=768),
        diffusion=DiffusionConfig(dim=768, num_tokens=32, width=768, depth=12, heads=12),
        prompt=PromptConfig(dim=768, out_dim=1280, num_soft_tokens=8, width=768, depth=6, heads=12),
        decoder=DecoderConfig(name_or_path="gpt2-large", hidden_size=1280),
        sampling=SamplingConfig(steps=250),
    ),
    "mini": DGLMConfig(
        encoder=EncoderConfig(name_or_path="sentence-transformers/all-MiniLM-L6-v2", dim=384),
        diffusion=DiffusionConfig(dim=384, num_tokens=8, token_features=32, width=128, depth=4, heads=4,
                                  ema_decay=0.999),
        prompt=PromptConfig(dim=384, out_dim=576, num_soft_tokens=8, width=256, depth=3, heads=4,
                            head="vocab_mixture", vocab_size=8192),
        decoder=DecoderConfig(name_or_path="HuggingFaceTB/SmolLM2-135M-Instruct", hidden_size=576),
    ),
}
