"""The DGLM pipeline and the Controller end to end on tiny random models."""

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from dglm import DGLM, Controller, FunctionConstraint
from dglm.encoder import SemanticEncoder
from dglm.io import CheckpointError
from dglm.presets import random_encoder, random_pipeline

PREFIXES = ["the game was", "", "a river of water in the city"]
FAST = dict(steps=4, max_new_tokens=5, min_new_tokens=5)


@pytest.fixture(scope="module")
def pipe():
    return random_pipeline("tiny")


def first_dim_low(pipe):
    return FunctionConstraint(lambda x: x[..., 0] * 10, name="first_dim_low")


def test_generate_shapes_and_seed(pipe):
    a = pipe.generate(PREFIXES, num_samples=2, seed=3, **FAST)
    b = pipe.generate(PREFIXES, num_samples=2, seed=3, **FAST)
    assert [len(c) for c in a.continuations] == [2, 2, 2]
    assert a.continuations == b.continuations and torch.equal(a.plans, b.plans)
    assert a.plans.shape == (3, 2, pipe.encoder.dim)
    assert torch.allclose(a.plans.norm(dim=-1), torch.ones(3, 2), atol=1e-5)
    assert set(a.timings) == {"encode", "diffusion", "prompt", "decode"}


def test_sigma2_one_ignores_the_plan(pipe):
    """At sigma^2 = 1 the generator sees pure noise: the soft prompts no longer depend on the plan."""
    x = torch.randn(2, pipe.encoder.dim)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    soft = pipe.prompt_generator.prompt(x, 1.0, g())
    soft_other = pipe.prompt_generator.prompt(-x, 1.0, g())
    assert torch.allclose(soft, soft_other)
    assert not torch.allclose(pipe.prompt_generator.prompt(x, 0.05, g()), pipe.prompt_generator.prompt(-x, 0.05, g()))


def test_save_load_round_trip(pipe, tmp_path):
    """Everything the checkpoint holds is read back from it: the encoder's standardisation statistics too (the
    sentence-transformers model is passed in unfitted, as a user passing their own copy of the encoder would)."""
    pipe.save_pretrained(tmp_path / "ckpt")
    unfitted = SemanticEncoder(pipe.encoder.model, pipe.encoder.config.name_or_path)
    loaded = DGLM.from_pretrained(tmp_path / "ckpt", encoder=unfitted, decoder=pipe.decoder)
    assert torch.equal(loaded.encoder.mean, pipe.encoder.mean) and torch.equal(loaded.encoder.std, pipe.encoder.std)
    assert not torch.equal(pipe.encoder.mean, torch.zeros_like(pipe.encoder.mean))  # fitted, not the defaults
    a = pipe.generate(PREFIXES, seed=5, **FAST)
    b = loaded.generate(PREFIXES, seed=5, **FAST)
    assert a.continuations == b.continuations and torch.equal(a.plans, b.plans)


def test_failed_save_keeps_the_previous_checkpoint(pipe, tmp_path, monkeypatch):
    pipe.save_pretrained(tmp_path / "ckpt")
    before = sorted(p.name for p in (tmp_path / "ckpt").rglob("*"))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pipe.prompt_generator, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        pipe.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind


def test_checkpoint_for_another_encoder_dimension_is_refused(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "ckpt")
    wider = random_encoder(pipe.config.encoder.model_copy(update={"dim": pipe.encoder.dim * 2}))
    with pytest.raises(ValueError, match="encoder dimension"):
        DGLM.from_pretrained(tmp_path / "ckpt", encoder=wider, decoder=pipe.decoder)


def test_bad_inputs(pipe):
    with pytest.raises(ValueError, match="non-empty"):
        pipe.generate([], **FAST)
    with pytest.raises(TypeError, match=r"prefixes\[0\]"):
        pipe.generate([None], **FAST)
    for n in (0, -1, 1.5):
        with pytest.raises(ValueError, match="num_samples"):
            pipe.generate(["a"], num_samples=n, **FAST)
    for s2 in (-0.1, float("nan"), 1.5):
        with pytest.raises(ValueError, match="sigma2"):
            pipe.generate(["a"], sigma2=s2, **FAST)
    with pytest.raises(ValueError, match="max_new_tokens"):
        pipe.generate(["a"], steps=2, max_new_tokens=0)
    with pytest.raises(CheckpointError, match="packaged"):
        DGLM.from_pretrained("/nonexistent/folder")


def test_controller_steers_and_unguided_rows_are_untouched(pipe):
    ctl = Controller(first_dim_low(pipe), pipe, strength=50.0)
    plain = pipe.generate(PREFIXES, num_samples=4, seed=1, **FAST)
    guided = ctl.generate(PREFIXES, num_samples=4, seed=1, **FAST)
    assert guided.plans[..., 0].mean() < plain.plans[..., 0].mean()
    mixed = ctl.generate(PREFIXES, num_samples=4, seed=1, constraints=[None, ctl.constraint, None], **FAST)
    assert torch.equal(mixed.plans[0], plain.plans[0]) and torch.equal(mixed.plans[2], plain.plans[2])
    assert torch.equal(mixed.plans[1], guided.plans[1])


def test_controller_zero_strength_equals_unguided(pipe):
    a = Controller(first_dim_low(pipe), pipe, strength=0.0).generate(PREFIXES, seed=2, **FAST)
    b = pipe.generate(PREFIXES, seed=2, **FAST)
    assert a.continuations == b.continuations and torch.equal(a.plans, b.plans)


def test_prompt_embeds_in_user_code_match_controller_generate(pipe):
    ctl = Controller(first_dim_low(pipe), pipe, strength=10.0)
    model = pipe.decoder.model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(do_sample=True, top_p=0.9, max_new_tokens=6, pad_token_id=pipe.decoder.pad_token_id)
    ours = ctl.generate(PREFIXES, num_samples=2, seed=11, steps=4, repetition_penalty=1.2, **kw)
    embeds, mask = ctl.prompt_embeds(PREFIXES, num_samples=2, seed=11, steps=4)
    torch.manual_seed(11)
    out = model.generate(inputs_embeds=embeds, attention_mask=mask, **kw,
                         logits_processor=[RepetitionPenaltyLogitsProcessor(1.2)])
    theirs = pipe.decoder.tokenizer.batch_decode(out, skip_special_tokens=True)
    assert theirs == [t for row in ours.continuations for t in row]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and not model._forward_pre_hooks


def test_control_contrast_in_user_code_matches_controller_generate(pipe):
    from dglm.plan_guidance import PlanGuidance

    ctl = Controller(first_dim_low(pipe), pipe, strength=10.0)
    kw = dict(do_sample=True, top_p=0.9, max_new_tokens=6, pad_token_id=pipe.decoder.pad_token_id)
    ours = ctl.generate(PREFIXES, num_samples=2, seed=11, steps=4, control_scale=3.0, repetition_penalty=1.2, **kw)
    embeds, mask = ctl.prompt_embeds(PREFIXES, num_samples=2, seed=11, steps=4)
    ref, ref_mask = Controller(None, pipe).prompt_embeds(PREFIXES, num_samples=2, seed=11, steps=4)
    assert not torch.equal(ref, embeds)  # guidance moved the plans; the prefixes' tokens are shared
    torch.manual_seed(11)
    penalty = RepetitionPenaltyLogitsProcessor(1.2)  # over every generated token, as dglm's decoder applies it
    guide = PlanGuidance(pipe.decoder.model, ref, ref_mask, scale=3.0, repetition_penalty=1.2)
    out = pipe.decoder.model.generate(inputs_embeds=embeds, attention_mask=mask, **kw, logits_processor=[penalty, guide])
    assert pipe.decoder.tokenizer.batch_decode(out, skip_special_tokens=True) == \
        [t for row in ours.continuations for t in row]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prompt_embeds_dtypes_are_finite(pipe, dtype):
    embeds, mask = Controller(first_dim_low(pipe), pipe, strength=1e4).prompt_embeds(PREFIXES, steps=3, dtype=dtype)
    assert embeds.dtype == dtype and torch.isfinite(embeds).all() and mask.dtype == torch.long


def test_controller_rejects_bad_controls(pipe):
    with pytest.raises(ValueError, match="strength"):
        Controller(first_dim_low(pipe), pipe, strength=float("nan"))
    ctl = Controller(first_dim_low(pipe), pipe)
    with pytest.raises(ValueError, match="one constraint"):
        ctl.generate(PREFIXES, constraints=[None], **FAST)
    with pytest.raises(ValueError, match=r"strength\[1\]"):
        ctl.generate(PREFIXES, strength=[1.0, -1.0, 1.0], **FAST)
    with pytest.raises(TypeError, match="constraint="):
        Controller(3, pipe)
