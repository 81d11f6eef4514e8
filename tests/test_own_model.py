"""The user's own model object decodes a plan: ``pipe.decoder.adapter_merged(my_model)`` lends it the
checkpoint's LoRA adapter for a block and leaves it bit-identical afterwards. On tiny random models, and
(marked ``assets``) README.md's own-model snippet run as written on the packaged ``mini`` checkpoint."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from dglm import Controller
from dglm.presets import random_pipeline

README = Path(__file__).resolve().parents[1] / "README.md"
PREFIXES = ["the game was", "a river of water in the city"]


def snapshot(model: torch.nn.Module) -> dict:
    """What a user could see of their object: modules, parameter objects, state dict, hooks, flags."""
    return {"modules": [(n, type(m)) for n, m in model.named_modules()],
            "params": [(n, id(p), p.requires_grad) for n, p in model.named_parameters()],
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
            "training": model.training}


def assert_unchanged(model: torch.nn.Module, before: dict, same_object: bool = True) -> None:
    """``model`` as ``before`` saw it (``same_object=False``: another object's snapshot, ids aside)."""
    after = snapshot(model)
    strip = (lambda ps: ps) if same_object else (lambda ps: [(n, g) for n, _, g in ps])
    assert after["modules"] == before["modules"] and strip(after["params"]) == strip(before["params"])
    assert after["hooks"] == before["hooks"] and after["training"] == before["training"]
    assert after["state"].keys() == before["state"].keys()
    for k, v in after["state"].items():  # bit-identical: same dtype, same bytes
        assert v.dtype == before["state"][k].dtype and torch.equal(v, before["state"][k]), k


@pytest.fixture(scope="module")
def adapted():
    """A tiny pipeline whose decoder carries a random, non-zero LoRA adapter, and a user's own copy of the
    base LM (the object they had before dglm)."""
    pipe = random_pipeline("tiny")
    mine = copy.deepcopy(pipe.decoder.model)
    torch.manual_seed(1)
    for p in pipe.decoder.add_adapter(rank=4):
        torch.nn.init.normal_(p, std=0.5)  # peft starts B at zero (a no-op adapter); make it matter
    pipe.decoder.model.eval().requires_grad_(False)
    return pipe, mine


def test_own_model_decodes_as_the_pipeline_inside_the_block_and_is_unchanged_after(adapted):
    pipe, mine = adapted
    ctl = Controller(None, pipe)
    kw = dict(do_sample=True, top_p=0.9, max_new_tokens=6, min_new_tokens=6, pad_token_id=pipe.decoder.pad_token_id)
    ours = ctl.generate(PREFIXES, num_samples=2, seed=3, steps=4, repetition_penalty=1.2, **kw)
    embeds, mask = ctl.prompt_embeds(PREFIXES, num_samples=2, seed=3, steps=4)
    before = snapshot(mine)

    def users_call():
        torch.manual_seed(3)
        out = mine.generate(inputs_embeds=embeds, attention_mask=mask, **kw,
                            logits_processor=[RepetitionPenaltyLogitsProcessor(1.2)])
        return pipe.decoder.tokenizer.batch_decode(out, skip_special_tokens=True)

    with pipe.decoder.adapter_merged(mine) as m:
        assert m is mine
        inside = users_call()
    assert inside == [t for row in ours.continuations for t in row]  # the pipeline's own text, adapter and all
    assert_unchanged(mine, before)
    assert users_call() != inside  # without the adapter, the plain model reads the soft tokens otherwise
    with pytest.raises(RuntimeError), pipe.decoder.adapter_merged(mine):
        raise RuntimeError("the user's code fails inside the block")
    assert_unchanged(mine, before)  # restored on the way out of an exception too


def test_own_model_in_another_dtype_gets_the_adapter_in_its_dtype(adapted):
    pipe, mine = adapted
    half = copy.deepcopy(mine).to(torch.bfloat16)
    before = snapshot(half)
    embeds, mask = Controller(None, pipe).prompt_embeds(PREFIXES, steps=3, dtype=torch.bfloat16)
    with torch.no_grad():
        reference = pipe.decoder.model(inputs_embeds=embeds.float(), attention_mask=mask).logits
        with pipe.decoder.adapter_merged(half):
            assert all(p.dtype == torch.bfloat16 for p in half.parameters())
            logits = half(inputs_embeds=embeds, attention_mask=mask).logits.float()
    assert torch.allclose(logits, reference, atol=0.1, rtol=0.05)
    assert_unchanged(half, before)


def test_own_model_that_does_not_match_the_decoder_is_refused(adapted):
    pipe, mine = adapted
    other = random_pipeline("tiny").decoder.model
    other.transformer.h[0].attn.c_attn = torch.nn.Linear(3, 3)  # a different architecture at one adapted layer
    with pytest.raises(ValueError, match=r"not an instance of the decoder 'random:tiny-gpt2'.*h\.0\.attn\.c_attn"):
        with pipe.decoder.adapter_merged(other):
            pass
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        with pipe.decoder.adapter_merged(pipe.decoder.model.get_base_model()):
            pass
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        with pipe.decoder.adapter_merged("gpt2"):
            pass


def test_without_an_adapter_the_block_leaves_the_model_alone():
    pipe = random_pipeline("tiny")
    mine = copy.deepcopy(pipe.decoder.model)
    before = snapshot(mine)
    with pipe.decoder.adapter_merged(mine) as m:
        assert m is mine
        assert_unchanged(mine, before)
    assert_unchanged(mine, before)


def readme_snippet() -> str:
    """The code between README.md's own-model markers (one fenced python block)."""
    block = re.search(r"<!-- own-model-snippet -->\s*```python\n(.*?)```\s*<!-- /own-model-snippet -->",
                      README.read_text(), re.DOTALL)
    assert block, "README.md has no own-model snippet between its markers"
    return block.group(1)


@pytest.mark.assets
def test_readme_own_model_snippet_runs_as_written_and_follows_the_plan(monkeypatch):
    """README.md's snippet, run as written on the packaged `mini` checkpoint: it writes text; the user's model
    is bit-identical to a fresh load afterwards; inside the block it writes what `ctl.generate` writes, and
    `topic('sports')` plans raise the share of sports text on neutral openers (test_product's check)."""
    from test_product import MARGIN, NEW_TOKENS, NUM_SAMPLES, OPENERS, STEPS, sports_share
    from transformers import AutoModelForCausalLM

    from dglm.assets import resolve_decoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no model hub: everything comes from installed packages
    code = readme_snippet()
    scope: dict = {}
    exec(compile(code, str(README) + ":own-model-snippet", "exec"), scope)  # the README's code, not user input
    pipe, ctl, mine, texts = scope["pipe"], scope["ctl"], scope["my_model"], scope["texts"]
    assert len(texts) == 3 and all(t.strip() for t in texts)

    fresh = AutoModelForCausalLM.from_pretrained(resolve_decoder("HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert_unchanged(mine, snapshot(fresh), same_object=False)  # as loaded, after the snippet's block
    before = snapshot(mine)
    assert pipe.decoder.has_adapter and not any("lora" in n for n, _ in mine.named_modules())

    def users_texts(controller: Controller, prefixes: list[str], seed: int, **gen) -> list[str]:
        embeds, mask = controller.prompt_embeds(prefixes, num_samples=NUM_SAMPLES, seed=seed, steps=STEPS)
        torch.manual_seed(seed)
        with pipe.decoder.adapter_merged(mine):
            out = mine.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                                pad_token_id=pipe.decoder.pad_token_id, **gen)
        return pipe.decoder.tokenizer.batch_decode(out, skip_special_tokens=True)

    greedy = dict(do_sample=False, logits_processor=[RepetitionPenaltyLogitsProcessor(1.2)])
    theirs = users_texts(ctl, OPENERS[:1], 0, **greedy)
    ours = ctl.generate(OPENERS[:1], num_samples=NUM_SAMPLES, seed=0, steps=STEPS, max_new_tokens=NEW_TOKENS,
                        do_sample=False, repetition_penalty=1.2)
    assert theirs == ours.continuations[0]

    sample = dict(do_sample=True, top_p=0.9, logits_processor=[RepetitionPenaltyLogitsProcessor(1.2)])
    plain = users_texts(Controller(None, pipe), OPENERS, 0, **sample)
    guided = users_texts(ctl, OPENERS, 0, **sample)
    assert sports_share(guided) >= sports_share(plain) + MARGIN, (plain, guided)
    assert_unchanged(mine, before)
