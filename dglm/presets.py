"""Random-weight DGLM pipelines built from configs alone, for shape and speed checks without real weights.

A preset's :class:`~dglm.config.DGLMConfig` (the registry is :data:`dglm.config.PRESETS`) names its encoder
and decoder by id and size only; this module knows the architecture behind each id and builds it with random
weights, with nothing downloaded:

- ``paper``: a Sentence-T5-XL-shaped encoder (T5-XL encoder: width 2048, 24 layers, 32 heads, gated-GELU
  MLP 5120; mean pooling, Dense 2048 -> 768, L2 normalisation) and a GPT-2-large-shaped decoder (1280 x 36
  layers, 20 heads, vocabulary 50,257): 1.2B + 774M parameters.
- ``mini``: an all-MiniLM-L6-v2-shaped BERT encoder (384 x 6 layers) and a SmolLM2-135M-shaped Llama
  decoder (576 x 30 layers, 9 heads, 3 key-value heads, vocabulary 49,152, tied embeddings).
- ``tiny``: two-layer models of width 32, built in well under a second, for tests and CPU smoke runs.

The tokenizers are synthetic word-level tokenizers over the models' full vocabularies (a few English
words, then filler tokens ``<w123>``): any text maps to valid ids and every id decodes to something. The
encoder's standardisation statistics are fitted on the random encoder's embeddings of random texts, so
the pipeline runs end to end; its outputs carry no meaning. The layers that training starts at zero (the
diffusion network's output, every block's noise-level modulation) are drawn randomly too, so that every
knob (cfg_scale, sigma2, strength, plan_scale, ...) changes the output, as it would on trained weights.

Example:
    >>> pipe = random_pipeline("tiny")
    >>> out = pipe.generate(["the game was"], num_samples=2, steps=4, max_new_tokens=4, min_new_tokens=4, seed=0)
    >>> len(out.continuations[0]), len(out.continuations[0][0].split())
    (2, 4)
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from dglm import assets
from dglm.config import PRESETS, RANDOM_PREFIX, DecoderConfig, DGLMConfig, EncoderConfig, preset_config
from dglm.decoder import Decoder
from dglm.diffusion import SemanticDiffuser
from dglm.encoder import SemanticEncoder
from dglm.nn import AdaBlock
from dglm.pipeline import DGLM
from dglm.prompt import PromptGenerator

# Special tokens of every synthetic tokenizer, at ids 0-3; the backbone configs below use the same ids.
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, UNK, BOS, EOS)
# Real words at the start of every vocabulary, so prompts can be written in (broken) English.
WORDS = tuple(sorted(set(
    "the a an and of to in is was it he she they we you that this with for on at by from as game team match "
    "player ball goal score season league coach won lost win city river music art science history king queen "
    "war peace love good bad great small big old new night day last first people world life time year man "
    "woman children school house water food book story film song".split()))) + tuple(".,!?'")
# The ``tiny`` preset's config, the one most examples build.
TINY = PRESETS["tiny"]

# Backbone architecture of each encoder id: a transformers config, mean-pooled (then projected to the
# EncoderConfig's dim when the widths differ, as Sentence-T5 does).
ENCODER_BACKBONES: dict[str, Callable[[], PretrainedConfig]] = {
    "sentence-transformers/sentence-t5-xl": lambda: T5Config(
        vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, pad_token_id=0,
        eos_token_id=3, decoder_start_token_id=0, architectures=["T5EncoderModel"]),
    "sentence-transformers/all-MiniLM-L6-v2": lambda: BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=512, pad_token_id=0),
    "tiny-bert": lambda: BertConfig(
        vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, pad_token_id=0),
}
# Architecture of each decoder id.
DECODER_BACKBONES: dict[str, Callable[[], PretrainedConfig]] = {
    "gpt2-large": lambda: GPT2Config(
        vocab_size=50257, n_positions=1024, n_embd=1280, n_layer=36, n_head=20, bos_token_id=2, eos_token_id=3,
        pad_token_id=0),
    "HuggingFaceTB/SmolLM2-135M-Instruct": lambda: LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=3, pad_token_id=0),
    "tiny-gpt2": lambda: GPT2Config(
        vocab_size=512, n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=2, eos_token_id=3,
        pad_token_id=0),
}


def random_pipeline(preset: str | DGLMConfig, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, seed: int = 0) -> DGLM:
    """A :class:`~dglm.pipeline.DGLM` with every component randomly initialised from ``preset``'s shapes.

    ``preset``: a name in :data:`dglm.config.PRESETS`, or a DGLMConfig whose encoder and decoder ids are ones
    of theirs (the ids pick the architectures, see :data:`ENCODER_BACKBONES` and :data:`DECODER_BACKBONES`).
    Weights are created directly on ``device`` (default CPU) in ``dtype`` (default float32). The
    diffusion and prompt networks in bfloat16 need ``torch.autocast`` around sampling.

    Example:
        >>> pipe = random_pipeline("tiny")
        >>> pipe.encoder.dim, pipe.decoder.hidden_size, pipe.prompt_generator.config.num_soft_tokens
        (32, 32, 4)
    """
    config = preset_config(preset)
    device = torch.device(device or "cpu")
    dtype = dtype or torch.float32
    torch.manual_seed(seed)
    encoder = random_encoder(config.encoder, device, dtype)
    decoder = random_decoder(config.decoder, device, dtype)
    with torch.device(device):
        diffuser = randomize(SemanticDiffuser(config.diffusion)).to(dtype).eval()
        prompt_generator = randomize(PromptGenerator(config.prompt)).to(dtype).eval()
    return DGLM(fit_random(encoder, seed), diffuser, prompt_generator, decoder, config.sampling)


def load_encoder(config: EncoderConfig) -> SemanticEncoder:
    """The encoder ``config`` names: for a ``random:`` id a random stand-in (:func:`random_encoder`, fitted by
    :func:`fit_random`), else the pretrained model (:func:`dglm.assets.load_encoder`).

    Example:
        >>> load_encoder(TINY.encoder).fitted
        True
    """
    if config.name_or_path.startswith(RANDOM_PREFIX):
        return fit_random(random_encoder(config))
    return assets.load_encoder(config.name_or_path)


def load_decoder(config: DecoderConfig) -> Decoder:
    """The decoder ``config`` names: for a ``random:`` id a random stand-in (:func:`random_decoder`), else the
    pretrained model (:func:`dglm.assets.load_decoder`).

    Example:
        >>> load_decoder(TINY.decoder).hidden_size
        32
    """
    if config.name_or_path.startswith(RANDOM_PREFIX):
        return random_decoder(config)
    return assets.load_decoder(config.name_or_path)


def fit_random(encoder: SemanticEncoder, seed: int = 0) -> SemanticEncoder:
    """Fit ``encoder``'s standardisation on a few dozen random texts (:func:`random_texts`): enough for a mean
    and std per dimension (the std of 32 samples is noisy, which does not matter for random weights).

    Example:
        >>> fit_random(random_encoder(TINY.encoder)).fitted
        True
    """
    encoder.fit_standardization(random_texts(32, 24, seed=seed))
    return encoder


def randomize(network: nn.Module) -> nn.Module:
    """Draw the layers that training deliberately starts at zero, in place, with PyTorch's default ``Linear``
    initialisation: every :class:`~dglm.nn.AdaBlock`'s noise-level modulation (zero: each block is the
    identity and ignores the noise level) and a :class:`~dglm.diffusion.SemanticDiffuser`'s output layer
    (zero: v = 0 whatever the prefix, so classifier-free guidance and the prefix do nothing) and null prefix.
    Returns ``network``.

    Example:
        >>> diffuser = SemanticDiffuser(TINY.diffusion)
        >>> z, alpha2, prefix = torch.randn(2, 32), torch.full((2,), 0.5), torch.randn(2, 32)
        >>> diffuser(z, alpha2, prefix).abs().max().item()  # training's initialisation: v = 0
        0.0
        >>> randomize(diffuser)(z, alpha2, prefix).abs().max().item() > 0
        True
    """
    for module in network.modules():
        if isinstance(module, AdaBlock):
            module.ada.reset_parameters()
    if isinstance(network, SemanticDiffuser):
        network.out.reset_parameters()
        nn.init.normal_(network.null_prefix)
    return network


def random_encoder(config: EncoderConfig, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> SemanticEncoder:
    """A sentence-transformers model of the architecture behind ``config.name_or_path``, random weights.

    sentence-transformers builds its Transformer module from a folder only; the folder here holds the
    backbone's config, a synthetic tokenizer and an empty weights file, so transformers initialises every
    weight randomly (its behaviour for weights a checkpoint lacks), directly on ``device`` in ``dtype``.

    Example:
        >>> enc = random_encoder(TINY.encoder)
        >>> enc.identity, enc.encode(["the game was"]).shape
        ('random:tiny-bert:32', torch.Size([1, 32]))
    """
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Dense, Normalize, Pooling, Transformer

    backbone = _lookup(ENCODER_BACKBONES, config.name_or_path, "encoder")()
    with tempfile.TemporaryDirectory() as folder:
        backbone.save_pretrained(folder)
        synthetic_tokenizer(backbone.vocab_size, model_max_length=256).save_pretrained(folder)
        save_file({}, f"{folder}/model.safetensors", metadata={"format": "pt"})
        with _quiet_transformers():
            transformer = Transformer(folder, model_kwargs={"dtype": dtype, "device_map": str(device)})
    width = backbone.hidden_size  # T5Config maps hidden_size to d_model
    modules = [transformer, Pooling(width, "mean")]
    if width != config.dim:
        modules.append(Dense(width, config.dim, bias=False, activation_function=torch.nn.Identity()))
    model = SentenceTransformer(modules=[*modules, Normalize()], device=str(device)).to(dtype)
    return SemanticEncoder(model, _random_id(config.name_or_path)).to(device)


def random_decoder(config: DecoderConfig, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> Decoder:
    """A causal LM of the architecture behind ``config.name_or_path``, random weights, synthetic tokenizer.

    Example:
        >>> dec = random_decoder(TINY.decoder)
        >>> dec.config.name_or_path, dec.hidden_size, len(dec.tokenizer)
        ('random:tiny-gpt2', 32, 512)
    """
    backbone = _lookup(DECODER_BACKBONES, config.name_or_path, "decoder")()
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(backbone, dtype=dtype)
    decoder = Decoder(model.eval().requires_grad_(False), synthetic_tokenizer(backbone.vocab_size),
                      _random_id(config.name_or_path))
    if decoder.hidden_size != config.hidden_size:
        raise ValueError(f"decoder {config.name_or_path!r} has hidden size {decoder.hidden_size}, but the config "
                         f"says hidden_size={config.hidden_size}")
    return decoder


def synthetic_tokenizer(vocab_size: int, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A word-level tokenizer of exactly ``vocab_size`` tokens: :data:`SPECIALS` (ids 0-3), :data:`WORDS`,
    then fillers ``<w{id}>``. Unknown words map to ``<unk>``; decoding joins tokens with spaces.

    Example:
        >>> tok = synthetic_tokenizer(100)
        >>> len(tok), tok.decode(tok("the game was").input_ids)
        (100, 'the game was')
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    names = list(SPECIALS) + list(WORDS)
    if vocab_size < len(names):
        raise ValueError(f"vocab_size={vocab_size} must be at least {len(names)} (special tokens + words)")
    vocab = {name: i for i, name in enumerate(names + [f"<w{i}>" for i in range(len(names), vocab_size)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, model_max_length=model_max_length)


def random_texts(n: int, num_words: int, seed: int = 0) -> list[str]:
    """``n`` texts of ``num_words`` random :data:`WORDS` each (one token per word for the synthetic tokenizers).

    Example:
        >>> [len(t.split()) for t in random_texts(2, 5)]
        [5, 5]
    """
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=num_words)) for _ in range(n)]


def _random_id(name_or_path: str) -> str:
    return RANDOM_PREFIX + name_or_path.removeprefix(RANDOM_PREFIX)


def _lookup(table: dict[str, Callable[[], PretrainedConfig]], name_or_path: str, what: str):
    name = name_or_path.removeprefix(RANDOM_PREFIX)
    if name not in table:
        raise ValueError(f"no random {what} architecture is known for {what} id {name_or_path!r}; known: "
                         f"{sorted(table)}")
    return table[name]


@contextmanager
def _quiet_transformers():
    """Silence transformers' report (and progress bar) on loading a deliberately empty checkpoint."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
