"""A LoRA adapter on the decoder: active only with soft prompts, shipped in and loaded from checkpoints."""

import numpy as np
import pytest
import torch

from dglm import DGLM
from dglm.config import PromptConfig
from dglm.presets import preset_config, random_decoder, random_pipeline
from dglm.prompt import PromptGenerator
from dglm.training.data import WindowSet
from dglm.training.train_prompt import PromptTrainingConfig, train_prompt_generator

PREFIXES = ["the game was", "a river of water in the city"]
FAST = dict(steps=4, max_new_tokens=5, min_new_tokens=5)


def adapted_pipeline() -> DGLM:
    """A tiny random pipeline whose decoder carries a LoRA adapter with random (non-zero) weights."""
    pipe = random_pipeline("tiny")
    torch.manual_seed(1)
    for p in pipe.decoder.add_adapter(rank=4):
        torch.nn.init.normal_(p, std=0.5)  # peft starts B at zero (a no-op adapter); make it matter
    pipe.decoder.model.eval().requires_grad_(False)
    return pipe


@pytest.fixture(scope="module")
def pipes():
    return random_pipeline("tiny"), adapted_pipeline()


def test_adapter_changes_soft_prompt_decoding_only(pipes):
    base, adapted = pipes
    assert adapted.decoder.has_adapter and not base.decoder.has_adapter
    ids = base.decoder.tokenize(PREFIXES)
    cont = base.decoder.tokenize(["was won", "flows"])
    assert torch.allclose(base.decoder.continuation_nll(ids, cont), adapted.decoder.continuation_nll(ids, cont))
    plain = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert base.decoder.generate(PREFIXES, **plain) == adapted.decoder.generate(PREFIXES, **plain)
    soft = torch.randn(2, 4, base.decoder.hidden_size)
    assert not torch.allclose(base.decoder.continuation_nll(ids, cont, soft),
                              adapted.decoder.continuation_nll(ids, cont, soft))


def test_checkpoint_ships_and_reloads_the_adapter(pipes, tmp_path, capsys):
    _, adapted = pipes
    adapted.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "decoder_adapter" / "adapter_model.safetensors").is_file()
    assert "random:tiny-gpt2" in (tmp_path / "ckpt" / "decoder_adapter" / "adapter_config.json").read_text()
    fresh = random_pipeline("tiny")  # the same base weights (same seed), no adapter
    loaded = DGLM.from_pretrained(tmp_path / "ckpt", encoder=fresh.encoder, decoder=fresh.decoder)
    assert loaded.decoder.has_adapter
    from dglm.cli import main

    assert main(["info", "--checkpoint", str(tmp_path / "ckpt")]) == 0
    assert '"r": 4' in capsys.readouterr().out
    a = adapted.generate(PREFIXES, seed=5, **FAST)
    b = loaded.generate(PREFIXES, seed=5, **FAST)
    assert a.continuations == b.continuations
    c = random_pipeline("tiny").generate(PREFIXES, seed=5, **FAST)  # without the adapter the text differs
    assert c.continuations != a.continuations


def test_adding_a_second_adapter_or_a_bad_rank_is_refused(pipes):
    with pytest.raises(ValueError, match="already carries an adapter"):
        pipes[1].decoder.add_adapter(rank=2)
    with pytest.raises(ValueError, match="rank=0 must be an integer >= 1"):
        random_decoder(preset_config("tiny").decoder).add_adapter(rank=0)


def test_lora_training_updates_the_adapter_and_never_the_base_weights(tmp_path):
    decoder = random_decoder(preset_config("tiny").decoder)
    base = {k: v.clone() for k, v in decoder.model.state_dict().items()}
    rng = np.random.default_rng(0)
    data = WindowSet(rng.integers(4, 100, (6, 8)), np.full((6, 1), 4), cont_emb=torch.randn(6, 1, 8))
    generator = PromptGenerator(PromptConfig(dim=8, out_dim=32, num_soft_tokens=2, width=16, depth=2, heads=2))
    config = PromptTrainingConfig(steps=3, batch_size=4, warmup=1, eval_limit=4, lora_rank=2, lora_lr=1e-2,
                                  mixed_precision="no")
    result = train_prompt_generator(generator, decoder, data, data, torch.zeros(8), torch.ones(8), config,
                                    tmp_path, show_progress_bar=False)
    assert decoder.has_adapter and np.isfinite(result["true"])
    state = decoder.model.get_base_model().state_dict()
    lora = {k: v for k, v in state.items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # B starts at zero: it was trained
    for name, value in base.items():  # peft renames wrapped layers' weights to `<layer>.base_layer.weight`
        key = name if name in state else name.replace(".weight", ".base_layer.weight").replace(
            ".bias", ".base_layer.bias")
        assert torch.equal(state[key], value), name


def test_prompt_embeds_in_user_code_use_the_adapter_like_generate(pipes):
    """``pipe.decoder.model`` has the adapter on: user code decoding the soft prompts writes what dglm writes."""
    from dglm import Controller, FunctionConstraint

    _, adapted = pipes
    ctl = Controller(FunctionConstraint(lambda x: x[..., 0], name="first_dim_low"), adapted, strength=10.0)
    # Every decoding setting given: user code's model.generate has no dglm defaults (repetition penalty 1.2).
    kw = dict(do_sample=True, top_p=0.9, repetition_penalty=1.2, max_new_tokens=6,
              pad_token_id=adapted.decoder.pad_token_id)
    ours = ctl.generate(PREFIXES, num_samples=2, seed=11, steps=4, **kw)
    embeds, mask = ctl.prompt_embeds(PREFIXES, num_samples=2, seed=11, steps=4)
    torch.manual_seed(11)
    out = adapted.decoder.model.generate(inputs_embeds=embeds, attention_mask=mask, **kw)
    assert adapted.decoder.tokenizer.batch_decode(out, skip_special_tokens=True) == \
        [t for row in ours.continuations for t in row]


def test_plain_baselines_run_the_base_model(pipes):
    """Best-of-N, FUDGE and activation steering decode plainly: the adapter must not change their text."""
    from dglm import FunctionConstraint
    from dglm.bench.baselines import best_of_n, fudge_generate, steered_generate
    from dglm.bench.fudge import PrefixDiscriminator
    from dglm.bench.steering import SteeringVector

    first = FunctionConstraint(lambda x: x[..., 0], name="first_dim_low")
    kw = dict(max_new_tokens=5, min_new_tokens=5, seed=0)
    (base, adapted) = pipes
    vocab = base.decoder.model.get_output_embeddings().weight.shape[0]
    disc = PrefixDiscriminator(torch.randn(vocab, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(2),
                               ("a", "b"))
    assert fudge_generate(adapted.decoder, [(disc, "b", 1.0)], PREFIXES, top_k=4, **kw) == \
        fudge_generate(base.decoder, [(disc, "b", 1.0)], PREFIXES, top_k=4, **kw)
    vec = SteeringVector({0: torch.ones(base.decoder.hidden_size)})
    assert steered_generate(adapted.decoder, vec, PREFIXES, 2.0, **kw) == \
        steered_generate(base.decoder, vec, PREFIXES, 2.0, **kw)
    assert best_of_n(adapted.decoder, adapted.encoder, first, PREFIXES, n=2, **kw).continuations == \
        best_of_n(base.decoder, base.encoder, first, PREFIXES, n=2, **kw).continuations


def test_a_users_model_is_never_modified_by_a_checkpoints_adapter(pipes, tmp_path):
    """Decoder(my_model) + a checkpoint with an adapter: LoRA layers, merges and the paired contrast happen on
    dglm's copy of the module tree; the user's object keeps its modules, weights, hooks and outputs."""
    from dglm.decoder import Decoder

    _, adapted = pipes
    adapted.save_pretrained(tmp_path / "ckpt")
    fresh = random_pipeline("tiny")
    user = random_decoder(preset_config("tiny").decoder).model  # a model dglm has never seen
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = user(ids).logits
    modules = [(name, type(m)) for name, m in user.named_modules()]
    state = {k: v.clone() for k, v in user.state_dict().items()}
    dec = Decoder(user, fresh.decoder.tokenizer, "random:tiny-gpt2")
    pipe = DGLM.from_pretrained(tmp_path / "ckpt", encoder=fresh.encoder, decoder=dec)
    assert pipe.decoder.has_adapter
    pipe.generate(PREFIXES, seed=0, **FAST)
    pipe.generate(PREFIXES, seed=0, plan_scale=2.0, **FAST)
    pipe.decoder.continuation_nll(dec.tokenize(PREFIXES), dec.tokenize(["won", "flows"]),
                                  torch.randn(2, 4, dec.hidden_size))
    pipe.decoder.to(torch.float64)  # moving or casting the pipeline moves dglm's copy only
    assert [(name, type(m)) for name, m in user.named_modules()] == modules
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in user.modules())
    assert user.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) and v.dtype == torch.float32 for k, v in user.state_dict().items())
    with torch.no_grad():
        assert torch.equal(user(ids).logits, before)


def test_generate_with_soft_prompts_runs_the_adapter_merged_and_restores_the_weights(pipes):
    _, adapted = pipes
    dec = adapted.decoder
    weights = {name: (p, p.detach().clone()) for name, p in dec.model.named_parameters()}
    soft = torch.randn(2, 4, dec.hidden_size)
    embeds, mask, _ = dec.embed(dec.tokenize(PREFIXES), soft)
    kw = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=dec.pad_token_id)
    with torch.no_grad():
        lora = dec.model.generate(inputs_embeds=embeds, attention_mask=mask, **kw)  # the LoRA branch, unmerged
    merged = dec.generate(PREFIXES, soft, repetition_penalty=1.0, **kw)
    assert merged == dec.tokenizer.batch_decode(lora, skip_special_tokens=True)
    for name, p in dec.model.named_parameters():  # the very same tensors, bit-identical: nothing subtracted
        assert p is weights[name][0] and torch.equal(p, weights[name][1]), name
    with dec.adapter_merged():
        swapped = [name for name, p in dec.model.named_parameters() if p is not weights[name][0]]
    assert swapped and all(name.endswith("base_layer.weight") for name in swapped)
    with dec.adapter_off():  # switched off around a soft-prompt call: it stays off, nothing is merged
        assert dec.generate(PREFIXES, soft, repetition_penalty=1.0, **kw) != merged
        with dec.adapter_merged():
            assert all(p is weights[name][0] for name, p in dec.model.named_parameters())


def test_the_decoders_module_tree_shares_storage_and_ties_but_not_objects():
    from conftest import make_llama, make_tokenizer

    from dglm.decoder import Decoder, share_weights

    user = make_llama(64)  # tied input and output embeddings
    twin = share_weights(user)
    assert twin.lm_head.weight is twin.model.embed_tokens.weight  # the tie survives the copy
    assert twin.lm_head.weight is not user.lm_head.weight
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(user.parameters(), twin.parameters(), strict=True))
    dec = Decoder(user, make_tokenizer())
    dec.model.train()
    assert not user.training and dec.model.model.layers[0] is not user.model.layers[0]


def test_a_float32_adapter_merges_into_a_bfloat16_decoder():
    """peft keeps adapter weights in float32 over a half-precision base; the merged weight keeps the base's dtype."""
    dec = random_decoder(preset_config("tiny").decoder, dtype=torch.bfloat16)
    for p in dec.add_adapter(rank=2):
        torch.nn.init.normal_(p, std=0.5)
    dec.model.eval().requires_grad_(False)
    soft = torch.randn(2, 4, dec.hidden_size, dtype=torch.bfloat16)
    with dec.adapter_merged():
        assert all(p.dtype == torch.bfloat16 for n, p in dec.model.named_parameters() if "base_layer" in n)
    out = dec.generate(PREFIXES, soft, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert len(out) == 2
